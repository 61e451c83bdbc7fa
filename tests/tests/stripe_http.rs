//! `POST /v1/webhooks/stripe` and support refunds over HTTP on the embedded app: signatures are
//! checked before anything else, every Stripe-authored payment_intent.* and charge.* fixture is
//! accepted, duplicates (sequential and concurrent) have one effect, and support refunds are
//! recorded once.

use api::auth::Role;
use api::compose::SIM_WEBHOOK_SECRET_FILE;
use backbone_tests::{eventually, spawn_app, TestApp};
use commands::EventStore;
use infrastructure::stripe::testing::{payment_intent_event, IntentSpec};
use infrastructure::stripe::webhook::sign_for_test;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn secret(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.path().join(SIM_WEBHOOK_SECRET_FILE))
        .expect("the simulated gateway's webhook secret")
        .trim()
        .to_string()
}

async fn deliver(app: &TestApp, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
    let mut req = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("Stripe-Signature", sig);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status();
    let text = resp.text().await.expect("text");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Places an order and creates its intent; returns (order id, payment id, intent id, minor amount).
async fn order_with_intent(app: &TestApp, token: &str) -> (String, String, String, i64) {
    let placed = app.place_order_ok(token, &[("prd_espresso", 1)]).await;
    let intent = placed.answer.body["intent_id"]
        .as_str()
        .expect("intent id in the checkout answer")
        .to_string();
    (placed.order_id, placed.payment_id, intent, 2490)
}

fn succeeded(event_id: &str, intent: &str, payment: &str, order: &str, minor: i64) -> Vec<u8> {
    payment_intent_event(
        event_id,
        "payment_intent.succeeded",
        &IntentSpec {
            intent_id: intent,
            amount_minor: minor,
            currency: "eur",
            payment_id: Some(payment),
            order_id: Some(order),
        },
        now(),
        None,
    )
}

async fn order_status(app: &TestApp, token: &str, order: &str) -> String {
    app.get(&format!("/v1/orders/{order}"), token).await.body["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_status(app: &TestApp, token: &str, order: &str, want: &str) {
    let got = eventually(Duration::from_secs(10), || async {
        let s = order_status(app, token, order).await;
        (s == want).then_some(s)
    })
    .await;
    assert_eq!(
        got.as_deref(),
        Some(want),
        "order {order} never became {want}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_get_400_and_change_nothing() {
    let app = spawn_app().await;
    let token = app.token("alice", Role::Customer);
    let (order, payment, intent, minor) = order_with_intent(&app, &token).await;
    let body = succeeded("evt_bad_1", &intent, &payment, &order, minor);
    let secret = secret(&app);
    let head = app.state.store.head().await.unwrap();

    let good = sign_for_test(&secret, now(), &body);
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        (
            "tampered body",
            tampered,
            Some(good.clone()),
            "invalid_signature",
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign_for_test(&secret, now() - 301, &body)),
            "stale_signature",
        ),
        ("missing header", body.clone(), None, "missing_signature"),
        (
            "wrong secret",
            body.clone(),
            Some(sign_for_test("whsec_wrong", now(), &body)),
            "invalid_signature",
        ),
    ];
    for (what, payload, sig, code) in cases {
        let (status, answer) = deliver(&app, &payload, sig.as_deref()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}");
    }
    assert_eq!(
        app.state.store.head().await.unwrap(),
        head,
        "nothing was written"
    );
    assert_eq!(order_status(&app, &token, &order).await, "awaiting_payment");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_success_pays_the_order_once_even_when_delivered_twice_and_concurrently() {
    let app = spawn_app().await;
    let token = app.token("alice", Role::Customer);
    let (order, payment, intent, minor) = order_with_intent(&app, &token).await;
    let secret = secret(&app);
    let body = succeeded("evt_dup_1", &intent, &payment, &order, minor);
    let sig = sign_for_test(&secret, now(), &body);
    let (a, b) = tokio::join!(
        deliver(&app, &body, Some(&sig)),
        deliver(&app, &body, Some(&sig))
    );
    let (c, _) = deliver(&app, &body, Some(&sig)).await;
    assert_eq!(
        (a.0, b.0, c),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
    let mut outcomes = vec![
        a.1["outcome"].as_str().unwrap().to_string(),
        b.1["outcome"].as_str().unwrap().to_string(),
    ];
    outcomes.sort();
    assert_eq!(outcomes, vec!["applied", "duplicate"], "exactly one effect");
    wait_status(&app, &token, &order, "paid").await;
    let stream = app.stream("payment", &payment).await;
    assert_eq!(stream.count_events("PaymentSucceeded"), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_stripe_authored_payment_and_charge_fixture_is_accepted() {
    let app = spawn_app().await;
    let secret = secret(&app);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stripe");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.contains("payment_intent.") || name.contains("charge.")) {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let sig = sign_for_test(&secret, now(), &body);
        let (status, answer) = deliver(&app, &body, Some(&sig)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        assert!(answer["outcome"].is_string(), "{name}: {answer}");
        seen += 1;
    }
    assert!(seen >= 10, "fixtures found: {seen}");
    // An unknown event type is acknowledged and ignored.
    let body = br#"{"id":"evt_unknown_1","object":"event","type":"customer.created","created":1700000000,"livemode":false,"data":{"object":{"id":"cus_1","object":"customer"}}}"#;
    let (status, answer) = deliver(&app, body, Some(&sign_for_test(&secret, now(), body))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["outcome"], "ignored");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_support_refund_is_recorded_once_and_notifies_the_customer() {
    let app = spawn_app().await;
    let token = app.token("alice", Role::Customer);
    let support = app.token("sam", Role::Support);
    let (order, payment, _, _) = order_with_intent(&app, &token).await;
    let paid = app.confirm_payment(&token, &payment, "pm_card_visa").await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    wait_status(&app, &token, &order, "paid").await;

    let path = format!("/v1/support/orders/{order}/refunds");
    let refund = async |amount: &str, key: Option<&str>| {
        let body = json!({ "amount": amount });
        match key {
            Some(key) => app.post_keyed(&path, &support, body, key).await,
            None => app.post(&path, &support, body).await,
        }
    };
    let first = refund("10.00", Some("refund-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["status"], "succeeded");
    let again = refund("10.00", Some("refund-1")).await;
    assert_eq!(
        again.body["refund_id"], first.body["refund_id"],
        "the same receipt"
    );
    let other = refund("1.00", Some("refund-1")).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    let too_much = refund("100.00", None).await;
    assert_eq!(too_much.status, StatusCode::CONFLICT, "{}", too_much.text);
    // Customers can't refund.
    let denied = app.post(&path, &token, json!({})).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let refunded = eventually(Duration::from_secs(10), || async {
        let o = app.get(&format!("/v1/orders/{order}"), &token).await;
        (o.body["refunded"]["amount"] == "10.00").then_some(o.body)
    })
    .await
    .expect("the order shows the refund");
    assert_eq!(
        refunded["status"], "paid",
        "partial refund keeps the order paid"
    );
    let note = eventually(Duration::from_secs(10), || async {
        let n = app.get("/v1/me/notifications", &token).await;
        n.body["notifications"]
            .as_array()
            .and_then(|all| all.iter().find(|n| n["kind"] == "refund_issued").cloned())
    })
    .await;
    assert!(note.is_some(), "refund_issued notification");
    let stream = app.stream("payment", &payment).await;
    assert_eq!(stream.count_events("PaymentRefunded"), 1, "recorded once");
    app.shutdown().await;
}
