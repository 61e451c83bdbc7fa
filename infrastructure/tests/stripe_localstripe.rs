//! The Stripe gateway and webhook path against `localstack-localstripe`, a stateful fake Stripe,
//! started per test on 127.0.0.1 (a free port) from the project's venv and killed at the end.
//!
//! The venv comes from `scripts/test.sh` (or, by hand:
//! `python3 -m venv .venv && .venv/bin/pip install localstack-localstripe`); `BACKBONE_VENV`
//! points elsewhere. A missing venv fails these tests loudly rather than skipping them.

mod stripe_support;

use commands::{Metadata, PaymentGateway, WebhookOutcome};
use domain::{OrderStatus, PaymentStatus};
use infrastructure::stripe::{
    SecretKey, StripeConfig, StripeGateway, WebhookVerifier, SIGNATURE_HEADER,
};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use stripe_support::*;

const KEY: &str = "sk_test_localstripe";

/// localstripe's launcher binds every interface and persists to /tmp; this one binds
/// 127.0.0.1 only and keeps its state in memory.
const LAUNCHER: &str = r#"
import sys
from aiohttp import web
from localstripe import server
from localstripe.resources import store
store.dump_to_disk = lambda: None
web.run_app(server.app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)
"#;

/// A running localstripe; killed (by its own pid) when dropped.
struct LocalStripe {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    let venv = std::env::var_os("BACKBONE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no python venv at {} (run scripts/test.sh, or: python3 -m venv .venv && \
         .venv/bin/pip install localstack-localstripe)",
        venv.display()
    );
    python
}

impl LocalStripe {
    async fn start() -> Self {
        let python = python();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("localstripe.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&python)
            .arg("-c")
            .arg(LAUNCHER)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start localstripe with {}: {e}", python.display()));
        let mut me = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!(
                    "localstripe exited ({status}); is localstack-localstripe installed in the venv? log:\n{}",
                    std::fs::read_to_string(&me.log).unwrap_or_default()
                );
            }
            let ready = http
                .get(format!("{}/v1/payment_intents", me.url))
                .bearer_auth(KEY)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return me;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "localstripe did not answer within 30 s; log:\n{}",
                std::fs::read_to_string(&me.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn gateway(&self) -> StripeGateway {
        let mut config = StripeConfig::new(SecretKey::new(KEY)).with_base_url(&self.url);
        config.backoff_base = Duration::from_millis(20);
        StripeGateway::new(config).unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What Stripe.js does in the browser: attach a test payment method and confirm.
    async fn confirm(&self, intent_id: &str, payment_method: &str) -> u16 {
        let (status, _) = self
            .post(
                &format!("/v1/payment_intents/{intent_id}"),
                &[("payment_method", payment_method)],
            )
            .await;
        assert_eq!(status, 200, "attaching {payment_method}");
        self.post(&format!("/v1/payment_intents/{intent_id}/confirm"), &[])
            .await
            .0
    }

    /// Registers a webhook endpoint (localstripe's own config API).
    async fn register_webhook(&self, url: &str, secret: &str) {
        let (status, _) = self
            .post(
                "/_config/webhooks/backbone",
                &[("url", url), ("secret", secret)],
            )
            .await;
        assert_eq!(status, 200, "registering the webhook");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_creates_an_intent_with_our_metadata_and_refunds_it_partially() {
    let ls = LocalStripe::start().await;
    let gateway = ls.gateway();
    let created = gateway
        .create_intent(commands::CreateIntent {
            payment_id: domain::PaymentId::parse("pay_ls_1").unwrap(),
            order_id: domain::OrderId::parse("ord_ls_1").unwrap(),
            amount: eur("19.99"),
            idempotency_key: "pay_ls_1".into(),
        })
        .await
        .unwrap();
    assert!(created.intent_id.starts_with("pi_"), "{created:?}");
    assert!(created.client_secret.starts_with(&created.intent_id));
    let intent = ls
        .get(&format!("/v1/payment_intents/{}", created.intent_id))
        .await;
    assert_eq!(intent["amount"], 1999);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["payment_id"], "pay_ls_1");
    assert_eq!(intent["metadata"]["order_id"], "ord_ls_1");
    assert_eq!(
        intent["status"], "requires_payment_method",
        "not confirmed by us"
    );

    assert_eq!(ls.confirm(&created.intent_id, "pm_card_visa").await, 200);
    let refund = gateway
        .refund(commands::RefundRequest {
            payment_id: domain::PaymentId::parse("pay_ls_1").unwrap(),
            order_id: domain::OrderId::parse("ord_ls_1").unwrap(),
            intent_id: created.intent_id.clone(),
            amount: eur("5.00"),
            idempotency_key: "refund:pay_ls_1:support:r1".into(),
        })
        .await
        .unwrap();
    assert!(refund.refund_id.starts_with("re_"), "{refund:?}");
    assert_eq!(refund.status, "succeeded");
    assert_eq!(refund.amount, eur("5.00"));

    // Refunding an intent that does not exist is a rejection, not something to retry.
    let err = gateway
        .refund(commands::RefundRequest {
            payment_id: domain::PaymentId::parse("pay_ls_1").unwrap(),
            order_id: domain::OrderId::parse("ord_ls_1").unwrap(),
            intent_id: "pi_missing".into(),
            amount: eur("1.00"),
            idempotency_key: "k".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, commands::GatewayError::Rejected(_)),
        "{err:?}"
    );
}

/// Applies, as the route will, every webhook delivered from `cursor` on until one of
/// `event_type` arrives (localstripe also sends events we ignore, such as balance.available).
/// Every delivery must verify.
async fn webhook_of_type(
    receiver: &ScriptedServer,
    cursor: &mut usize,
    event_type: &str,
    app: &App,
) -> WebhookOutcome {
    let verifier = WebhookVerifier::new([SECRET]).unwrap();
    loop {
        let requests = receiver
            .wait_for(*cursor + 1, Duration::from_secs(15))
            .await;
        assert!(
            requests.len() > *cursor,
            "localstripe delivered no {event_type} webhook"
        );
        let r = &requests[*cursor];
        *cursor += 1;
        let event: commands::ProviderEvent = verifier
            .verify_and_parse(r.header(SIGNATURE_HEADER), &r.body, chrono::Utc::now())
            .unwrap_or_else(|e| panic!("localstripe's signed webhook refused: {e}"))
            .into();
        let outcome = app
            .payments
            .apply(&event, Metadata::default())
            .await
            .unwrap();
        if event.event_type == event_type {
            return outcome;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn localstripe_webhooks_verify_and_move_our_payments_and_a_partial_refund_is_recorded_once() {
    let ls = LocalStripe::start().await;
    let receiver = ScriptedServer::start(vec![(200, "{}".into())]).await;
    ls.register_webhook(&format!("{}/v1/webhooks/stripe", receiver.url), SECRET)
        .await;
    let app = app(Arc::new(ls.gateway()));
    let mut after = 0;

    // Paid with pm_card_visa: a signed payment_intent.succeeded.
    let paid = place_order(&app, 2).await;
    let intent = paid
        .intent_id
        .clone()
        .expect("checkout created a real intent");
    assert_eq!(ls.confirm(&intent, "pm_card_visa").await, 200);
    let mut cursor = 0;
    let outcome = webhook_of_type(&receiver, &mut cursor, "payment_intent.succeeded", &app).await;
    assert!(
        matches!(outcome, WebhookOutcome::Applied { .. }),
        "{outcome:?}"
    );
    drain_process_managers(&app, &mut after).await;
    assert_eq!(
        payment(&app, &paid.payment_id).await.status,
        PaymentStatus::Succeeded
    );
    assert_eq!(order(&app, &paid.order_id).await.status, OrderStatus::Paid);

    // Declined (localstripe declines card 4000000000000341, not 4000000000000002): a signed
    // payment_intent.payment_failed.
    let declined = place_order(&app, 1).await;
    let intent2 = declined.intent_id.clone().unwrap();
    assert_eq!(
        ls.confirm(&intent2, "pm_card_chargeCustomerFail").await,
        402
    );
    let outcome = webhook_of_type(
        &receiver,
        &mut cursor,
        "payment_intent.payment_failed",
        &app,
    )
    .await;
    assert!(
        matches!(outcome, WebhookOutcome::Applied { .. }),
        "{outcome:?}"
    );
    drain_process_managers(&app, &mut after).await;
    let p = payment(&app, &declined.payment_id).await;
    assert_eq!(p.status, PaymentStatus::Failed);
    assert_eq!(p.failure_reason.as_deref(), Some("card_declined"));
    assert_eq!(
        order(&app, &declined.order_id).await.status,
        OrderStatus::PaymentFailed
    );

    // A partial support refund, requested twice: one refund at localstripe, recorded once.
    let first = app
        .payments
        .refund_order(&ctx(), &paid.order_id, Some(eur("5.00")), "ls-refund-1")
        .await
        .unwrap();
    assert_eq!(first.status, "succeeded");
    let again = app
        .payments
        .refund_order(&ctx(), &paid.order_id, Some(eur("5.00")), "ls-refund-1")
        .await
        .unwrap();
    assert_eq!(again, first);
    let refunds = ls
        .get(&format!("/v1/refunds?payment_intent={intent}"))
        .await;
    assert_eq!(
        refunds["data"].as_array().map(Vec::len),
        Some(1),
        "{refunds}"
    );
    let p = payment(&app, &paid.payment_id).await;
    assert_eq!(p.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(p.refunded, Some(eur("5.00")));
    assert_eq!(
        payment_events(&app, &paid.payment_id)
            .await
            .iter()
            .filter(|e| *e == "PaymentRefunded")
            .count(),
        1
    );
    drain_process_managers(&app, &mut after).await;
    assert_eq!(
        order(&app, &paid.order_id).await.refunded,
        Some(eur("5.00"))
    );
}
