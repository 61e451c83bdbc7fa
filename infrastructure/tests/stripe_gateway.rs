//! The Stripe gateway adapter against a scripted fake Stripe: request shape (form fields,
//! idempotency keys, auth), retry classification (5xx, 429, connect errors retried; 4xx not),
//! lenient responses, and the end-to-end "Stripe answers 500 at checkout, the retry worker
//! creates the intent later".

mod stripe_support;

use commands::{CreateIntent, GatewayError, PaymentGateway};
use domain::{OrderId, PaymentId, PaymentStatus};
use infrastructure::stripe::{SecretKey, StripeConfig, StripeGateway};
use std::sync::Arc;
use std::time::Duration;
use stripe_support::*;
use workers::FeedWorker;

const KEY: &str = "sk_test_gateway_suite";

fn gateway(url: &str, attempts: u32) -> StripeGateway {
    let mut config = StripeConfig::new(SecretKey::new(KEY)).with_base_url(url);
    config.max_attempts = attempts;
    config.backoff_base = Duration::from_millis(5);
    config.request_timeout = Duration::from_secs(5);
    StripeGateway::new(config).unwrap()
}

fn intent_request() -> CreateIntent {
    CreateIntent {
        payment_id: PaymentId::parse("pay_123").unwrap(),
        order_id: OrderId::parse("ord_123").unwrap(),
        amount: eur("12.50"),
        idempotency_key: "pay_123".into(),
    }
}

const INTENT_OK: &str = r#"{"id":"pi_1","object":"payment_intent","client_secret":"pi_1_secret_abc","status":"requires_payment_method","some_new_field":{"x":1}}"#;

#[tokio::test]
async fn creating_an_intent_posts_amount_currency_metadata_and_the_payment_id_as_key() {
    let server = ScriptedServer::start(vec![(200, INTENT_OK.into())]).await;
    let created = gateway(&server.url, 3)
        .create_intent(intent_request())
        .await
        .unwrap();
    assert_eq!(created.intent_id, "pi_1");
    assert_eq!(created.client_secret, "pi_1_secret_abc");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/payment_intents")
    );
    assert_eq!(r.header("idempotency-key"), Some("pay_123"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(r.form_value("amount").as_deref(), Some("1250"));
    assert_eq!(r.form_value("currency").as_deref(), Some("eur"));
    assert_eq!(
        r.form_value("metadata[order_id]").as_deref(),
        Some("ord_123")
    );
    assert_eq!(
        r.form_value("metadata[payment_id]").as_deref(),
        Some("pay_123")
    );
    assert_eq!(r.form_value("confirm"), None, "the client confirms, not us");
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_with_the_same_key_then_succeed() {
    let server = ScriptedServer::start(vec![
        (
            500,
            r#"{"error":{"type":"api_error","message":"boom"}}"#.into(),
        ),
        (429, r#"{"error":{"type":"rate_limit_error"}}"#.into()),
        (200, INTENT_OK.into()),
    ])
    .await;
    let created = gateway(&server.url, 3)
        .create_intent(intent_request())
        .await
        .unwrap();
    assert_eq!(created.intent_id, "pi_1");
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.header("idempotency-key") == Some("pay_123")));
}

#[tokio::test]
async fn persistent_server_errors_end_as_transient_after_the_configured_attempts() {
    let server = ScriptedServer::start(vec![(503, "unavailable".into())]).await;
    let err = gateway(&server.url, 3)
        .create_intent(intent_request())
        .await
        .unwrap_err();
    assert_matches!(err, GatewayError::Transient(_));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_client_error_is_rejected_at_once() {
    let server = ScriptedServer::start(vec![(
        400,
        r#"{"error":{"type":"invalid_request_error","code":"amount_too_small","message":"amount must be at least 50 cents"}}"#.into(),
    )])
    .await;
    let err = gateway(&server.url, 3)
        .create_intent(intent_request())
        .await
        .unwrap_err();
    match err {
        GatewayError::Rejected(m) => assert!(m.contains("amount_too_small"), "{m}"),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_stripe_is_transient() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = gateway(&format!("http://127.0.0.1:{port}"), 2)
        .create_intent(intent_request())
        .await
        .unwrap_err();
    assert_matches!(err, GatewayError::Transient(_));
}

#[tokio::test]
async fn errors_never_carry_the_secret_key() {
    let server = ScriptedServer::start(vec![(401, r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****uite"}}"#.into())]).await;
    let err = gateway(&server.url, 1)
        .create_intent(intent_request())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(KEY), "{err}");
}

#[tokio::test]
async fn the_client_secret_is_retrieved_from_the_intent_with_retries() {
    let server =
        ScriptedServer::start(vec![(502, "bad gateway".into()), (200, INTENT_OK.into())]).await;
    let secret = gateway(&server.url, 3).client_secret("pi_1").await.unwrap();
    assert_eq!(secret, "pi_1_secret_abc");
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "a 502 is retried");
    for r in &seen {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v1/payment_intents/pi_1")
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
}

#[tokio::test]
async fn an_unknown_intent_or_one_without_a_secret_has_no_client_secret() {
    let server = ScriptedServer::start(vec![
        (
            404,
            r#"{"error":{"type":"invalid_request_error","code":"resource_missing"}}"#.into(),
        ),
        (200, r#"{"id":"pi_2","object":"payment_intent"}"#.into()),
    ])
    .await;
    let g = gateway(&server.url, 3);
    let missing = g.client_secret("pi_missing").await.unwrap_err();
    assert_matches!(missing, GatewayError::Rejected(m) if m.contains("resource_missing"));
    let without = g.client_secret("pi_2").await.unwrap_err();
    assert_matches!(without, GatewayError::Rejected(_));
    assert_eq!(server.requests().len(), 2, "a 4xx is not retried");
}

#[tokio::test]
async fn a_refund_posts_the_intent_amount_and_the_deterministic_key() {
    let server = ScriptedServer::start(vec![(
        200,
        r#"{"id":"re_1","object":"refund","amount":400,"currency":"eur","status":"succeeded","charge":"ch_1"}"#.into(),
    )])
    .await;
    let result = gateway(&server.url, 3)
        .refund(refund_request(
            "123",
            "pi_1",
            "4.00",
            "refund:pay_123:support:k1",
        ))
        .await
        .unwrap();
    assert_eq!(result.refund_id, "re_1");
    assert_eq!(result.status, "succeeded");
    assert_eq!(result.amount, eur("4.00"));
    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/refunds");
    assert_eq!(
        r.header("idempotency-key"),
        Some("refund:pay_123:support:k1")
    );
    assert_eq!(r.form_value("payment_intent").as_deref(), Some("pi_1"));
    assert_eq!(r.form_value("amount").as_deref(), Some("400"));
}

#[tokio::test]
async fn a_refund_without_a_status_is_pending() {
    let server = ScriptedServer::start(vec![(200, r#"{"id":"re_2"}"#.into())]).await;
    let result = gateway(&server.url, 1)
        .refund(refund_request("1", "pi_1", "1.00", "k"))
        .await
        .unwrap();
    assert_eq!(result.status, "pending");
    assert_eq!(result.amount, eur("1.00"));
}

#[tokio::test(flavor = "multi_thread")]
async fn checkout_succeeds_while_stripe_answers_500_and_the_retry_worker_creates_the_intent_later()
{
    // Checkout's call gets three 500s (all its attempts), the worker's first call two more and
    // then a 500 again, its second call succeeds.
    let mut script: Vec<(u16, String)> = vec![(500, "{}".into()); 6];
    script.push((200, INTENT_OK.into()));
    let server = ScriptedServer::start(script).await;
    let app = app(Arc::new(gateway(&server.url, 3)));
    let placed = place_order(&app, 1).await;
    assert!(placed.intent_id.is_none(), "stripe was down at checkout");
    assert_eq!(
        payment(&app, &placed.payment_id).await.status,
        PaymentStatus::Requested
    );
    assert_eq!(
        order(&app, &placed.order_id).await.status,
        domain::OrderStatus::AwaitingPayment
    );

    let worker = workers::payments::PaymentRetryWorker::new(
        app.store.clone(),
        app.shop.clone(),
        Arc::new(commands::SystemClock),
        workers::payments::PaymentRetryConfig {
            min_age: Duration::ZERO,
            retry_base: Duration::from_millis(10),
            ..Default::default()
        },
    );
    // Stripe still down for the first pass: not a worker failure, the payment stays pending.
    worker.step().await.unwrap();
    assert_eq!(worker.pending(), vec![placed.payment_id.clone()]);
    let mut created = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        worker.step().await.unwrap();
        if worker.pending().is_empty() {
            created = true;
            break;
        }
    }
    assert!(created, "the worker created the intent");
    let p = payment(&app, &placed.payment_id).await;
    assert_eq!(p.status, PaymentStatus::IntentCreated);
    assert_eq!(p.intent_id.as_deref(), Some("pi_1"));
    let seen = server.requests();
    assert_eq!(seen.len(), 7);
    assert!(seen
        .iter()
        .all(|r| r.header("idempotency-key") == Some(placed.payment_id.as_str())));
}
