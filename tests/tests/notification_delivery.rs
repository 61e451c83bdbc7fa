//! Notifications are delivered: through the `file` channel (an `.eml` in the outbox), an SMTP
//! server (aiosmtpd, started by the test) and SES (moto, read back from moto's record), each
//! attempt recorded on the notification's own stream. Failures are retried with backoff and then
//! failed for support to see, on both backends. A rebuild of the read model sends nothing again.

use api::auth::Role;
use api::notify::{NotifyChannel, NotifySettings};
use backbone_tests::aws::{moto, spawn_aws_app_configured};
use backbone_tests::mail::{ses_messages, SmtpSink};
use backbone_tests::scenario::notification;
use backbone_tests::{eventually, spawn_app_configured, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// Places an order of one unit of a new product and pays it; returns the order id.
async fn paid_order(app: &TestApp, customer: &str, product: &str) -> String {
    let admin = app.token("ada", Role::Admin);
    app.create_product(&admin, product, "12.00", 10).await;
    let token = app.token(customer, Role::Customer);
    let placed = app.place_order_ok(&token, &[(product, 1)]).await;
    let paid = app
        .confirm_payment(&token, &placed.payment_id, "pm_card_visa")
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    placed.order_id
}

/// Waits until the customer's `kind` notification of `order_id` reaches `status`.
async fn notification_reaches(
    app: &TestApp,
    customer: &str,
    order_id: &str,
    kind: &str,
    status: &str,
) -> Value {
    let token = app.token(customer, Role::Customer);
    notification(app, &token, order_id, kind).await;
    eventually(app.wait + Duration::from_secs(20), || async {
        let a = app.get("/v1/me/notifications", &token).await;
        a.body["notifications"]
            .as_array()?
            .iter()
            .find(|n| {
                n["order_id"] == order_id && n["kind"] == kind && n["delivery_status"] == status
            })
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("the {kind} notification of {order_id} never became {status}"))
}

/// The checks every channel shares: the confirmation is delivered once, with a Message-ID from
/// its notification id, and support's timeline says so. Returns the notification.
async fn confirmation_is_delivered(
    app: &TestApp,
    customer: &str,
    product: &str,
    channel: &str,
) -> Value {
    let order_id = paid_order(app, customer, product).await;
    let view = notification_reaches(app, customer, &order_id, "order_confirmed", "delivered").await;
    let id = view["notification_id"].as_str().unwrap();
    assert_eq!(view["channel"], channel);
    assert_eq!(view["attempts"], 1);
    assert!(view["delivered_at"].is_string(), "{view}");
    // The notification's stream holds exactly one delivery.
    let stream = app.stream("notification", id).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.text);
    assert_eq!(stream.event_types(), ["NotificationDelivered"]);
    assert_eq!(stream.body["state"]["status"], "delivered");
    // Support sees the delivery on the order's timeline.
    let support = app.token("sam", Role::Support);
    let summary = format!("order_confirmed delivered by {channel} (attempt 1)");
    eventually(app.wait, || async {
        let a = app
            .get(&format!("/v1/support/orders/{order_id}/timeline"), &support)
            .await;
        a.body["entries"]
            .as_array()?
            .iter()
            .any(|e| e["summary"] == summary.as_str())
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no {summary:?} on the timeline of {order_id}"));
    view
}

/// An embedded app that sends through an SMTP sink of its own (which refuses `refuse`, when
/// given).
async fn app_with_smtp_sink(refuse: Option<&str>) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start(refuse).await;
    let url = sink.url.clone();
    let app = spawn_app_configured(tempfile::tempdir().unwrap(), |c| {
        c.notify = NotifySettings {
            smtp_url: Some(url),
            ..NotifySettings::new(NotifyChannel::Smtp)
        };
    })
    .await;
    (app, sink)
}

/// Of the messages a channel sent, exactly one is `view`'s, and it is its RFC 5322 message.
fn assert_sent_once(messages: &[String], view: &Value, channel: &str) {
    let id = view["notification_id"].as_str().unwrap();
    let mine: Vec<&String> = messages.iter().filter(|m| m.contains(id)).collect();
    assert_eq!(
        mine.len(),
        1,
        "one message through {channel} for the notification: {messages:?}"
    );
    assert_is_the_message_of(mine[0], view);
}

/// The RFC 5322 message of `view`, as every channel sends it.
fn assert_is_the_message_of(raw: &str, view: &Value) {
    let id = view["notification_id"].as_str().unwrap();
    assert!(
        raw.contains(&format!("Message-ID: <{id}@backbone.localhost>")),
        "{raw}"
    );
    assert!(raw.contains("To: alice@example.com"), "{raw}");
    assert!(
        raw.contains("From: \"Backbone demo shop\" <orders@backbone.localhost>"),
        "{raw}"
    );
    assert!(raw.contains(&format!("Subject: {}", view["subject"].as_str().unwrap())));
    assert!(raw.contains("Content-Type: multipart/alternative"), "{raw}");
    assert!(raw.contains("Content-Type: text/html"), "{raw}");
    assert!(raw.contains("Thank you for your order"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_channel_writes_the_confirmation_to_the_outbox_and_a_rebuild_sends_nothing_again()
{
    let app = spawn_app_configured(tempfile::tempdir().unwrap(), |_| {}).await;
    let view = confirmation_is_delivered(&app, "alice", "prd_mail_file", "file").await;
    let id = view["notification_id"].as_str().unwrap().to_owned();
    let outbox = app.data_dir.path().join("outbox");
    let path = outbox.join(format!("{id}.eml"));
    let raw = std::fs::read_to_string(&path).expect("the confirmation's .eml");
    assert_is_the_message_of(&raw, &view);
    assert_eq!(view["message_id"], format!("<{id}@backbone.localhost>"));
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    let files = || std::fs::read_dir(&outbox).unwrap().count();
    let before = files();

    // Rebuild the notifications read model from zero: nothing becomes pending again, so nothing
    // is sent again (the outbox file is untouched).
    let admin = app.token("ada", Role::Admin);
    let started = app.rebuild_projection(&admin, "notifications").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    eventually(Duration::from_secs(20), || async {
        let a = app.get("/v1/admin/projections", &admin).await;
        let p = a.body["projections"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "notifications")?
            .clone();
        (p["rebuild"]["state"] == "done").then_some(())
    })
    .await
    .expect("the rebuild finishes");
    let again = notification_reaches(
        &app,
        "alice",
        view["order_id"].as_str().unwrap(),
        "order_confirmed",
        "delivered",
    )
    .await;
    assert_eq!(again["delivered_at"], view["delivered_at"]);
    // A delivery round over the rebuilt model (and its pending list) sends nothing.
    let worker = NotifySettings {
        outbox: Some(outbox.clone()),
        ..NotifySettings::new(NotifyChannel::File)
    }
    .worker(
        app.state.shop.clone(),
        app.state.models.clone(),
        app.state.clock.clone(),
        None,
    )
    .unwrap();
    let round = worker.deliver_due().await.unwrap();
    assert_eq!(round.delivered, 0, "{round:?}");
    assert_eq!(files(), before);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        written
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smtp_channel_hands_the_confirmation_to_an_smtp_server() {
    let (app, sink) = app_with_smtp_sink(None).await;
    let view = confirmation_is_delivered(&app, "alice", "prd_mail_smtp", "smtp").await;
    assert_sent_once(&sink.messages(), &view, "SMTP");
    assert!(
        !app.data_dir.path().join("outbox").exists(),
        "nothing went to files"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ses_channel_sends_the_confirmation_through_ses_on_dynamodb() {
    let (app, _stage) = spawn_aws_app_configured(true, |_| {}).await;
    let view = confirmation_is_delivered(&app, "alice", "prd_mail_ses", "ses").await;
    let id = view["notification_id"].as_str().unwrap();
    assert_sent_once(&ses_messages(&moto::moto().endpoint).await, &view, "SES");
    // The provider's own id is recorded (SES's, not the Message-ID header).
    assert!(
        view["message_id"].as_str().is_some_and(|m| !m.contains(id)),
        "{view}"
    );
    app.shutdown().await;
}

/// A message the SMTP server refuses for good fails at once; one it cannot take now is retried
/// with backoff until the last attempt fails. Support lists both and sees them on the order.
async fn failures_are_retried_then_failed_and_support_sees_them(app: &TestApp, product: &str) {
    let order_id = paid_order(app, "alice", product).await;
    let failed = notification_reaches(app, "alice", &order_id, "order_confirmed", "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("SMTP"),
        "{failed}"
    );
    assert!(failed["failed_at"].is_string());

    let support = app.token("sam", Role::Support);
    let listed = app.get("/v1/support/notifications/failed", &support).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert!(listed.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["notification_id"] == failed["notification_id"]));
    let customer = app.token("alice", Role::Customer);
    let forbidden = app.get("/v1/support/notifications/failed", &customer).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    let found = eventually(app.wait, || async {
        let a = app
            .get(&format!("/v1/support/orders?order_id={order_id}"), &support)
            .await;
        let order = a.body["orders"].as_array()?.first()?.clone();
        (order["failed_notifications"] == 1).then_some(order)
    })
    .await;
    assert!(
        found.is_some(),
        "support search counts the failed notification"
    );
    let timeline = app
        .get(&format!("/v1/support/orders/{order_id}/timeline"), &support)
        .await;
    let deliveries: Vec<&str> = timeline.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["event_type"]
                .as_str()
                .unwrap_or("")
                .starts_with("Notification")
        })
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(
        deliveries.ends_with(&[
            "NotificationRetrying",
            "NotificationRetrying",
            "NotificationFailed"
        ]),
        "{deliveries:?}"
    );
}

fn unreachable_smtp() -> NotifySettings {
    // A port that was just free: nothing listens there, so every attempt fails and is retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    NotifySettings {
        smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
        max_attempts: 3,
        backoff: Duration::from_millis(100),
        ..NotifySettings::new(NotifyChannel::Smtp)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_deliveries_retry_then_fail_for_support_embedded() {
    let app = spawn_app_configured(tempfile::tempdir().unwrap(), |c| {
        c.notify = unreachable_smtp()
    })
    .await;
    failures_are_retried_then_failed_and_support_sees_them(&app, "prd_mail_fail").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_deliveries_retry_then_fail_for_support_on_dynamodb() {
    let (app, _stage) =
        spawn_aws_app_configured(true, |c| c.workers.notify = unreachable_smtp()).await;
    failures_are_retried_then_failed_and_support_sees_them(&app, "prd_mail_fail").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_the_server_refuses_fails_at_the_first_attempt() {
    let (app, sink) = app_with_smtp_sink(Some("alice@example.com")).await;
    let order_id = paid_order(&app, "alice", "prd_mail_refused").await;
    let failed = notification_reaches(&app, "alice", &order_id, "order_confirmed", "failed").await;
    assert_eq!(
        failed["attempts"], 1,
        "a permanent refusal is not retried: {failed}"
    );
    assert!(
        failed["last_error"].as_str().unwrap().contains("550"),
        "{failed}"
    );
    assert!(sink.messages().is_empty());
    app.shutdown().await;
}

/// A file channel that holds every send until `racers` sends are under way, so that workers
/// racing on one notification have all read its stream before any of them records the attempt.
struct RacingMailer {
    inner: infrastructure::mail::FileMailer,
    gate: tokio::sync::Barrier,
    message_ids: std::sync::Mutex<Vec<Option<String>>>,
}

#[async_trait::async_trait]
impl commands::Mailer for RacingMailer {
    fn channel(&self) -> &'static str {
        "file"
    }

    async fn send(
        &self,
        email: &commands::OutgoingEmail,
    ) -> Result<Option<String>, commands::MailError> {
        self.gate.wait().await;
        let sent = self.inner.send(email).await?;
        self.message_ids.lock().unwrap().push(sent.clone());
        Ok(sent)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_racing_on_one_notification_record_one_delivery_of_one_message() {
    use backbone_tests::bench::{paid_order, seed_orders, Embedded};
    use std::sync::Arc;
    let backend = Embedded::open().await;
    let (dir, store, models) = (&backend.dir, &backend.store, &backend.models);
    let now = chrono::Utc::now();
    seed_orders(store.as_ref(), 1, |i| paid_order(i, now)).await;
    backend
        .project(Arc::new(
            projections::notifications::NotificationsProjection,
        ))
        .await;
    let clock = Arc::new(commands::ManualClock::new(
        now + chrono::Duration::seconds(1),
    ));
    let shop = backend.shop(clock.clone());
    let outbox = dir.path().join("outbox");
    let mailer = Arc::new(RacingMailer {
        inner: infrastructure::mail::FileMailer::new(
            &outbox,
            infrastructure::mail::parse_sender(api::notify::DEFAULT_MAIL_FROM).unwrap(),
        ),
        gate: tokio::sync::Barrier::new(2),
        message_ids: Default::default(),
    });
    let worker = || {
        workers::DeliveryWorker::new(shop.clone(), models.clone(), mailer.clone(), clock.clone())
    };
    let (a, b) = (worker(), worker());
    let (a, b) = tokio::join!(a.deliver_due(), b.deliver_due());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.failed + a.retrying + b.failed + b.retrying,
        0,
        "{a:?} {b:?}"
    );

    // Both sent (at least once), the same message both times, into the same one file.
    let ids = mailer.message_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[0].is_some() && ids[0] == ids[1], "{ids:?}");
    let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // The notification's stream records one delivery, under the one command id of attempt 1.
    let notification_id = files[0]
        .as_ref()
        .unwrap()
        .path()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let stream = store
        .load(&commands::StreamRef::new(
            domain::StreamType::Notification,
            notification_id.clone(),
        ))
        .await
        .unwrap();
    let types: Vec<&str> = stream
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["NotificationDelivered"], "{notification_id}");
    assert_eq!(stream.version, 1);
    assert_eq!(
        stream.events[0].metadata.command_id.as_deref(),
        Some(format!("deliver:{notification_id}:1").as_str())
    );
}
