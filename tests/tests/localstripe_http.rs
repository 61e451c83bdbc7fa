//! The whole app against localstripe (a stateful fake Stripe on 127.0.0.1), one scenario on both
//! backends: checkout creates a real PaymentIntent there, a customer cannot pay through the API,
//! localstripe's signed webhooks come back to the app's own `POST /v1/webhooks/stripe`, and the
//! order and the customer's notifications follow (paid, declined, refunded by support). On AWS
//! it all runs over moto, with no simulated gateway in the process.

#[path = "../../infrastructure/tests/stripe_support/localstripe.rs"]
mod localstripe;

use api::auth::Role;
use api::compose::StripeSettings;
use backbone_tests::aws::spawn_aws_app_configured;
use backbone_tests::{eventually, spawn_app_configured, TestApp};
use infrastructure::stripe::webhook::sign_for_test;
use localstripe::{LocalStripe, KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const WEBHOOK_SECRET: &str = "whsec_localstripe_backbone";

/// How long a payment's effects may take to reach the read models (the AWS fan-out on moto is
/// the slow one).
const SETTLE: Duration = Duration::from_secs(60);

fn stripe_on(ls: &LocalStripe) -> StripeSettings {
    StripeSettings {
        secret_key: KEY.into(),
        base_url: Some(ls.url.clone()),
    }
}

async fn app_on(ls: &LocalStripe) -> TestApp {
    let stripe = stripe_on(ls);
    let app = spawn_app_configured(tempfile::tempdir().unwrap(), move |c| {
        c.api.stripe = Some(stripe);
        c.api.webhook_secrets = vec![WEBHOOK_SECRET.into()];
    })
    .await;
    ls.register_webhook(&app.url("/v1/webhooks/stripe"), WEBHOOK_SECRET)
        .await;
    app
}

async fn aws_app_on(ls: &LocalStripe) -> TestApp {
    let stripe = stripe_on(ls);
    let (app, _stage) = spawn_aws_app_configured(true, move |c| {
        c.api.stripe = Some(stripe);
        c.api.webhook_secrets = vec![WEBHOOK_SECRET.into()];
    })
    .await;
    assert!(
        app.state.simulator.is_none(),
        "the AWS app paying through Stripe has no simulator"
    );
    ls.register_webhook(&app.url("/v1/webhooks/stripe"), WEBHOOK_SECRET)
        .await;
    app
}

async fn order_where(app: &TestApp, token: &str, order: &str, status: &str) -> Option<Value> {
    eventually(SETTLE, || async {
        let o = app.get(&format!("/v1/orders/{order}"), token).await;
        (o.body["status"] == status).then_some(o.body)
    })
    .await
}

async fn notification(app: &TestApp, token: &str, order: &str, kind: &str) -> Option<Value> {
    eventually(SETTLE, || async {
        let n = app.get("/v1/me/notifications", token).await;
        n.body["notifications"].as_array().and_then(|all| {
            all.iter()
                .find(|n| n["kind"] == kind && n["order_id"] == order)
                .cloned()
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn localstripe_payments_reach_the_embedded_app_by_signed_webhook_and_move_orders() {
    let ls = LocalStripe::start().await;
    pay_decline_refund(app_on(&ls).await, &ls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn localstripe_payments_reach_the_aws_app_by_signed_webhook_and_move_orders() {
    let ls = LocalStripe::start().await;
    pay_decline_refund(aws_app_on(&ls).await, &ls).await;
}

/// The scenario: forged confirmations, a payment and its redelivery, a decline and a support
/// refund. Stops the app at the end.
async fn pay_decline_refund(app: TestApp, ls: &LocalStripe) {
    scenario(&app, ls).await;
    app.shutdown().await;
}

async fn scenario(app: &TestApp, ls: &LocalStripe) {
    let token = app.token("alice", Role::Customer);

    // Checkout creates a real PaymentIntent at localstripe.
    let placed = app.place_order(&token, &[("prd_espresso", 1)]).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let order = placed.body["order_id"].as_str().unwrap().to_string();
    let intent = placed.body["intent_id"]
        .as_str()
        .expect("a real intent id")
        .to_string();
    let at_stripe = ls.get(&format!("/v1/payment_intents/{intent}")).await;
    assert_eq!(at_stripe["id"], intent.as_str());
    assert_eq!(at_stripe["metadata"]["order_id"], order.as_str());
    let payment = placed.body["payment_id"].as_str().unwrap().to_string();

    // The client secret checkout answered is Stripe's, and asked for again it is retrieved
    // from Stripe (the backbone keeps none).
    assert_eq!(placed.body["client_secret"], at_stripe["client_secret"]);
    let again = app
        .get(&format!("/v1/payments/{payment}/client-secret"), &token)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["client_secret"], at_stripe["client_secret"]);

    // With Stripe, confirming only passes the payment method on: the simulator's test cards
    // mean nothing, and a method Stripe refuses moves nothing.
    let confirm = |method: &'static str, key: &'static str| {
        let (token, payment) = (token.clone(), payment.clone());
        async move {
            app.post_keyed(
                &format!("/v1/payments/{payment}/confirm"),
                &token,
                json!({ "payment_method": method }),
                key,
            )
            .await
        }
    };
    for (method, key) in [("pm_forged", "c-1"), ("4242424242424242", "c-2")] {
        let refused = confirm(method, key).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
        assert_eq!(
            refused.body["error"]["code"], "payment_rejected",
            "{}",
            refused.text
        );
    }
    let stranger = app.token("mallory", Role::Customer);
    let foreign = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/payments/{payment}/confirm"),
            Some(&stranger),
            Some(json!({ "payment_method": "pm_card_visa" })),
            &[],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.text);
    let unpaid = app.get(&format!("/v1/orders/{order}"), &token).await;
    assert_ne!(unpaid.body["status"], "paid", "{}", unpaid.text);
    let at_stripe = ls.get(&format!("/v1/payment_intents/{intent}")).await;
    assert_ne!(at_stripe["status"], "succeeded", "{at_stripe}");

    // pm_card_visa through the API: Stripe answers, and its signed webhook pays the order.
    let paid = confirm("pm_card_visa", "c-3").await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    assert_eq!(
        paid.body["status"], "succeeded",
        "Stripe's answer: {}",
        paid.text
    );
    let replayed = confirm("pm_card_visa", "c-3").await;
    assert_eq!(replayed.body["status"], "succeeded", "{}", replayed.text);
    assert!(
        order_where(app, &token, &order, "paid").await.is_some(),
        "the order became paid"
    );
    assert!(notification(app, &token, &order, "order_confirmed")
        .await
        .is_some());
    // The success named Stripe's charge: support finds the order by it, and so would a dispute
    // that names only the charge.
    let at_stripe = ls.get(&format!("/v1/payment_intents/{intent}")).await;
    let charge = at_stripe["latest_charge"]["id"]
        .as_str()
        .or(at_stripe["latest_charge"].as_str())
        .unwrap_or_else(|| panic!("localstripe names the charge: {at_stripe}"))
        .to_string();
    let support = app.token("sam", Role::Support);
    let by_charge = eventually(app.wait, || async {
        let a = app
            .get(&format!("/v1/support/orders?charge_id={charge}"), &support)
            .await;
        (a.body["orders"][0]["order_id"] == order.as_str()).then_some(a.body)
    })
    .await;
    assert!(by_charge.is_some(), "no order found by charge {charge}");

    // Stripe redelivers: localstripe's own payment_intent.succeeded, signed again and posted
    // once more, is acknowledged as a duplicate with no second effect.
    let events = ls.get("/v1/events?limit=100").await;
    let delivered = events["data"]
        .as_array()
        .and_then(|all| {
            all.iter().find(|e| {
                e["type"] == "payment_intent.succeeded"
                    && e["data"]["object"]["id"] == intent.as_str()
            })
        })
        .unwrap_or_else(|| panic!("localstripe's succeeded event for {intent}: {events}"))
        .clone();
    let body = serde_json::to_vec(&delivered).unwrap();
    let signature = sign_for_test(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), &body);
    let again = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["outcome"], "duplicate", "{again}");

    // A declined card: payment_intent.payment_failed, the order shows it, with a notification.
    let declined = app.place_order(&token, &[("prd_filter", 1)]).await;
    let order2 = declined.body["order_id"].as_str().unwrap().to_string();
    let intent2 = declined.body["intent_id"].as_str().unwrap().to_string();
    assert_eq!(
        ls.confirm(&intent2, "pm_card_chargeCustomerFail").await,
        402
    );
    assert!(
        order_where(app, &token, &order2, "payment_failed")
            .await
            .is_some(),
        "the order shows payment_failed"
    );
    assert!(notification(app, &token, &order2, "payment_failed")
        .await
        .is_some());

    // A partial refund by support, requested twice: one refund at localstripe, recorded once.
    let support = app.token("sam", Role::Support);
    let path = format!("/v1/support/orders/{order}/refunds");
    for _ in 0..2 {
        let r = app
            .post_keyed(&path, &support, json!({"amount": "5.00"}), "ls-refund")
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let refunded = eventually(SETTLE, || async {
        let o = app.get(&format!("/v1/orders/{order}"), &token).await;
        (o.body["refunded"]["amount"] == "5.00").then_some(o.body)
    })
    .await;
    assert!(refunded.is_some(), "the refund is recorded once: 5.00");
    let refunds = ls
        .get(&format!("/v1/refunds?payment_intent={intent}"))
        .await;
    let count = refunds["data"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(count, 1, "one refund at the provider: {refunds}");
}
