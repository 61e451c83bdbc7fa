//! Disputes reach everyone who needs them, on both backends, from signed Stripe webhooks that
//! carry no metadata of ours and name only the charge (as payloads of older API versions do):
//! the payment's success named its charge, so the dispute is matched by charge id. Opened and
//! lost, the dispute shows on the order view and the support view with the amount withdrawn, on
//! the support timeline and in the payment's own stream; support finds the order by
//! `disputed=true` and by `charge_id`; the customer hears of it once.

use api::auth::Role;
use api::compose::SIM_WEBHOOK_SECRET_FILE;
use backbone_tests::aws::spawn_aws_app_configured;
use backbone_tests::{eventually, spawn_app, TestApp};
use infrastructure::simulated::charge_of;
use infrastructure::stripe::testing::{
    dispute_event, payment_intent_event, DisputeSpec, IntentSpec,
};
use reqwest::StatusCode;
use serde_json::Value;

const AWS_SECRET: &str = "whsec_disputes_on_aws";

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_dispute_matched_by_charge_reaches_order_support_and_customer_embedded() {
    let app = spawn_app().await;
    let secret = std::fs::read_to_string(app.data_dir.path().join(SIM_WEBHOOK_SECRET_FILE))
        .expect("the simulated gateway's webhook secret");
    a_lost_dispute_reaches_everyone(&app, secret.trim()).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_dispute_matched_by_charge_reaches_order_support_and_customer_on_dynamodb() {
    let (app, _stage) = spawn_aws_app_configured(true, |c| {
        c.api.webhook_secrets = vec![AWS_SECRET.to_owned()];
    })
    .await;
    a_lost_dispute_reaches_everyone(&app, AWS_SECRET).await;
    app.shutdown().await;
}

/// Polls `path` until `check` finds what it wants in the body.
async fn until(app: &TestApp, token: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(app.wait, || async {
        let a = app.get(path, token).await;
        (a.status == StatusCode::OK && check(&a.body)).then_some(a.body)
    })
    .await
    .unwrap_or_else(|| panic!("{path} never showed what was expected"))
}

fn order_ids(list: &Value) -> Vec<&str> {
    list["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["order_id"].as_str().expect("order id"))
        .collect()
}

async fn a_lost_dispute_reaches_everyone(app: &TestApp, secret: &str) {
    let token = app.token("dora", Role::Customer);
    let support = app.token("sam", Role::Support);
    let analyst = app.token("ana", Role::Analyst);
    let placed = app.place_order(&token, &[("prd_espresso", 1)]).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let order = placed.body["order_id"].as_str().unwrap().to_owned();
    let payment = placed.body["payment_id"].as_str().unwrap().to_owned();
    let intent = placed.body["intent_id"].as_str().unwrap().to_owned();
    let charge = charge_of(&intent);
    let other = app.place_order(&token, &[("prd_espresso", 1)]).await;
    let other = other.body["order_id"].as_str().unwrap().to_owned();

    // The success names its charge (`latest_charge`); support can find the order by it.
    let paid = payment_intent_event(
        "evt_dsp_paid",
        "payment_intent.succeeded",
        &IntentSpec {
            intent_id: &intent,
            amount_minor: 2490,
            currency: "eur",
            payment_id: Some(&payment),
            order_id: Some(&order),
        },
        chrono::Utc::now().timestamp(),
        None,
    );
    let a = app.webhook(&paid, secret).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let by_charge = until(
        app,
        &support,
        &format!("/v1/support/orders?charge_id={charge}"),
        |b| b["orders"][0]["order_id"] == order.as_str() && b["orders"][0]["status"] == "paid",
    )
    .await;
    assert_eq!(by_charge["orders"][0]["charge_id"], charge.as_str());

    for (event_id, event_type, status) in [
        ("evt_dsp_open", "charge.dispute.created", "needs_response"),
        ("evt_dsp_lost", "charge.dispute.closed", "lost"),
    ] {
        let body = dispute_event(
            event_id,
            event_type,
            &the_dispute(&charge, status),
            chrono::Utc::now().timestamp(),
        );
        let a = app.webhook(&body, secret).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.body["outcome"], "applied", "{}", a.text);
        assert_eq!(a.body["payment_id"], payment.as_str(), "{}", a.text);
        let view = until(app, &token, &format!("/v1/orders/{order}"), |b| {
            b["dispute"]["status"] == status
        })
        .await;
        assert_eq!(view["dispute"]["dispute_id"], "dp_e2e_1");
        assert_eq!(view["dispute"]["reason"], "fraudulent");
        assert_eq!(view["dispute"]["amount"]["amount"], "24.90", "{view}");
        let withdrawn = if status == "lost" {
            serde_json::json!({ "amount": "24.90", "currency": "EUR" })
        } else {
            Value::Null
        };
        assert_eq!(view["dispute"]["withdrawn"], withdrawn, "{view}");
        let found = until(app, &support, "/v1/support/orders?disputed=true", |b| {
            b["orders"][0]["dispute"]["status"] == status
        })
        .await;
        assert_eq!(order_ids(&found), [order.as_str()], "{found}");
        assert_eq!(found["orders"][0]["dispute"]["withdrawn"], withdrawn);
    }

    // The support timeline says what the chargeback took.
    let timeline = until(
        app,
        &support,
        &format!("/v1/support/orders/{order}/timeline"),
        |b| {
            b["entries"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e["summary"] == "dispute dp_e2e_1 lost: fraudulent (24.90 EUR withdrawn)"
                })
            })
        },
    )
    .await;
    assert!(timeline["entries"].as_array().unwrap().len() >= 4);
    // The payment's own stream records it, once per status.
    let stream = app
        .get(&format!("/v1/streams/payment/{payment}"), &analyst)
        .await;
    let disputes: Vec<&Value> = stream.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event_type"] == "PaymentDisputed")
        .collect();
    assert_eq!(disputes.len(), 2, "{}", stream.text);
    assert_eq!(disputes[1]["event_version"], 2);
    assert_eq!(disputes[1]["payload"]["withdrawn"]["amount"], "24.90");
    // A redelivered dispute event changes nothing.
    let again = dispute_event(
        "evt_dsp_lost",
        "charge.dispute.closed",
        &the_dispute(&charge, "lost"),
        chrono::Utc::now().timestamp(),
    );
    let a = app.webhook(&again, secret).await;
    assert_eq!(a.body["outcome"], "duplicate", "{}", a.text);

    // The customer heard of it once, when it was opened.
    let notified =
        backbone_tests::scenario::notification(app, &token, &order, "dispute_opened").await;
    assert!(
        notified["body"].as_str().unwrap().contains("fraudulent"),
        "{notified}"
    );
    let mine = app.get("/v1/me/notifications", &token).await;
    let opened = mine.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "dispute_opened")
        .count();
    assert_eq!(opened, 1);
    // Orders never disputed are the others.
    let undisputed = app.get("/v1/support/orders?disputed=false", &support).await;
    let ids = order_ids(&undisputed.body);
    assert!(
        ids.contains(&other.as_str()) && !ids.contains(&order.as_str()),
        "{ids:?}"
    );
    // A charge nobody knows is acknowledged and ignored.
    let stranger = dispute_event(
        "evt_dsp_stranger",
        "charge.dispute.created",
        &DisputeSpec {
            dispute_id: "dp_stranger",
            amount_minor: 100,
            reason: "general",
            ..the_dispute("ch_not_ours", "needs_response")
        },
        chrono::Utc::now().timestamp(),
    );
    let a = app.webhook(&stranger, secret).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["outcome"], "ignored", "{}", a.text);
}

/// The test's dispute of 24.90 EUR on `charge`, reported by charge alone, as of `status`.
fn the_dispute<'a>(charge: &'a str, status: &'a str) -> DisputeSpec<'a> {
    DisputeSpec {
        dispute_id: "dp_e2e_1",
        charge_id: charge,
        intent_id: None,
        amount_minor: 2490,
        currency: "eur",
        reason: "fraudulent",
        status,
    }
}
