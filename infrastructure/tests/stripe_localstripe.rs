//! The Stripe gateway and webhook path against `localstack-localstripe`, a stateful fake Stripe,
//! started per test on 127.0.0.1 (a free port) from the project's venv and killed at the end.
//!
//! The venv comes from `scripts/test.sh` (or, by hand:
//! `python3 -m venv .venv && .venv/bin/pip install localstack-localstripe`); `BACKBONE_VENV`
//! points elsewhere. A missing venv fails these tests loudly rather than skipping them.

mod stripe_support;

use commands::FeedCursor;
use commands::{
    CancelIntent, ConfirmIntent, CreatedIntent, GatewayError, PaymentGateway, WebhookOutcome,
};
use domain::{OrderStatus, PaymentStatus};
use infrastructure::stripe::{StripeGateway, WebhookVerifier, SIGNATURE_HEADER};
use std::sync::Arc;
use std::time::Duration;
use stripe_support::*;

#[path = "stripe_support/localstripe.rs"]
mod localstripe;
use localstripe::*;

/// An intent for payment `pay_ls_<n>` of order `ord_ls_<n>`, keyed by the payment id.
fn intent_request(n: &str, amount: &str) -> commands::CreateIntent {
    commands::CreateIntent {
        payment_id: domain::PaymentId::parse(&format!("pay_ls_{n}")).unwrap(),
        order_id: domain::OrderId::parse(&format!("ord_ls_{n}")).unwrap(),
        amount: eur(amount),
        idempotency_key: format!("pay_ls_{n}"),
    }
}

/// Creates the intent of payment `pay_ls_<n>` through our gateway.
async fn create_intent(gateway: &StripeGateway, n: &str, amount: &str) -> CreatedIntent {
    gateway
        .create_intent(intent_request(n, amount))
        .await
        .unwrap()
}

/// The intent as localstripe holds it.
async fn intent_at_stripe(ls: &LocalStripe, intent_id: &str) -> serde_json::Value {
    ls.get(&format!("/v1/payment_intents/{intent_id}")).await
}

fn confirm_request(intent_id: &str, payment_method: &str, key: &str) -> ConfirmIntent {
    ConfirmIntent {
        intent_id: intent_id.into(),
        payment_method: payment_method.into(),
        idempotency_key: key.into(),
    }
}

fn cancel_request(intent_id: &str, key: &str) -> CancelIntent {
    CancelIntent {
        intent_id: intent_id.into(),
        idempotency_key: key.into(),
    }
}

/// The gateway's answer is a rejection: nothing a retry would change.
#[track_caller]
fn assert_rejected<T: std::fmt::Debug>(result: Result<T, GatewayError>) {
    assert_matches!(result, Err(GatewayError::Rejected(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_creates_an_intent_with_our_metadata_and_refunds_it_partially() {
    let ls = LocalStripe::start().await;
    let gateway = ls.gateway();
    let created = create_intent(&gateway, "1", "19.99").await;
    assert!(created.intent_id.starts_with("pi_"), "{created:?}");
    assert!(created.client_secret.starts_with(&created.intent_id));
    let intent = intent_at_stripe(&ls, &created.intent_id).await;
    assert_eq!(intent["amount"], 1999);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["payment_id"], "pay_ls_1");
    assert_eq!(intent["metadata"]["order_id"], "ord_ls_1");
    assert_eq!(
        intent["status"], "requires_payment_method",
        "not confirmed by us"
    );

    // Confirming passes the method on: a declined card is a rejection, a good one succeeds.
    // (localstripe keeps no idempotency keys, so a replay is checked at the API instead.)
    let other = create_intent(&gateway, "2", "1.00").await;
    assert_rejected(
        gateway
            .confirm_intent(confirm_request(
                &other.intent_id,
                "pm_card_chargeCustomerFail",
                "confirm:pay_ls_2:a",
            ))
            .await,
    );
    let confirmed = gateway
        .confirm_intent(confirm_request(
            &created.intent_id,
            "pm_card_visa",
            "confirm:pay_ls_1:b",
        ))
        .await
        .unwrap();
    assert_eq!(confirmed.intent_id, created.intent_id);
    assert_eq!(confirmed.status, "succeeded");
    let at_stripe = intent_at_stripe(&ls, &created.intent_id).await;
    assert_eq!(at_stripe["status"], "succeeded", "{at_stripe}");
    let refund = gateway
        .refund(refund_request(
            "ls_1",
            &created.intent_id,
            "5.00",
            "refund:pay_ls_1:support:r1",
        ))
        .await
        .unwrap();
    assert!(refund.refund_id.starts_with("re_"), "{refund:?}");
    assert_eq!(refund.status, "succeeded");
    assert_eq!(refund.amount, eur("5.00"));

    // Refunding an intent that does not exist is a rejection, not something to retry.
    assert_rejected(
        gateway
            .refund(refund_request("ls_1", "pi_missing", "1.00", "k"))
            .await,
    );
}

/// The client secret is never stored: it is retrieved from the intent whenever it is needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_retrieves_the_client_secret_of_an_intent() {
    let ls = LocalStripe::start().await;
    let gateway = ls.gateway();
    let created = create_intent(&gateway, "s1", "4.00").await;
    assert_eq!(
        gateway.client_secret(&created.intent_id).await.unwrap(),
        created.client_secret
    );
    assert_rejected(gateway.client_secret("pi_missing").await);
}

/// An expired order's intent is canceled at Stripe; one that succeeded cannot be.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_cancels_an_unpaid_intent_and_cannot_cancel_a_paid_one() {
    let ls = LocalStripe::start().await;
    let gateway = ls.gateway();
    let unpaid = create_intent(&gateway, "c1", "3.00").await;
    let canceled = gateway
        .cancel_intent(cancel_request(&unpaid.intent_id, "cancel:pay_ls_c1"))
        .await
        .unwrap();
    assert_eq!(canceled.status, "canceled");
    let at_stripe = intent_at_stripe(&ls, &unpaid.intent_id).await;
    assert_eq!(at_stripe["status"], "canceled", "{at_stripe}");

    let paid = create_intent(&gateway, "c2", "3.00").await;
    gateway
        .confirm_intent(confirm_request(
            &paid.intent_id,
            "pm_card_visa",
            "confirm:pay_ls_c2:a",
        ))
        .await
        .unwrap();
    assert_rejected(
        gateway
            .cancel_intent(cancel_request(&paid.intent_id, "cancel:pay_ls_c2"))
            .await,
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
        let outcome = apply(app, &event).await;
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
    let mut after = FeedCursor::start();

    // Paid with pm_card_visa: a signed payment_intent.succeeded.
    let paid = place_order(&app, 2).await;
    let intent = paid
        .intent_id
        .clone()
        .expect("checkout created a real intent");
    assert_eq!(ls.confirm(&intent, "pm_card_visa").await, 200);
    let mut cursor = 0;
    let outcome = webhook_of_type(&receiver, &mut cursor, "payment_intent.succeeded", &app).await;
    assert_matches!(outcome, WebhookOutcome::Applied { .. });
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
    assert_matches!(outcome, WebhookOutcome::Applied { .. });
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
