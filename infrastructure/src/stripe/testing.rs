//! Test support (the `testsuite` feature): Stripe-shaped event bodies for our own payments, to
//! sign with [`sign_for_test`](super::webhook::sign_for_test) and feed through the real webhook
//! path in tests of any crate.
//!
//! The bodies hold only the fields the lenient parser reads, so they exercise the fallback
//! parser; the Stripe-authored fixtures in `tests/fixtures/stripe/` exercise the typed one.

use serde_json::{json, Value};

/// A PaymentIntent as the provider would describe it.
#[derive(Debug, Clone)]
pub struct IntentSpec<'a> {
    pub intent_id: &'a str,
    pub amount_minor: i64,
    /// Lowercase, as Stripe sends it (`"eur"`).
    pub currency: &'a str,
    /// `metadata.payment_id`, as our gateway sets it.
    pub payment_id: Option<&'a str>,
    /// `metadata.order_id`, as our gateway sets it.
    pub order_id: Option<&'a str>,
}

fn metadata(spec: &IntentSpec<'_>) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(p) = spec.payment_id {
        m.insert("payment_id".into(), json!(p));
    }
    if let Some(o) = spec.order_id {
        m.insert("order_id".into(), json!(o));
    }
    Value::Object(m)
}

fn envelope(event_id: &str, event_type: &str, created: i64, object: Value) -> Vec<u8> {
    json!({
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "type": event_type,
        "data": { "object": object },
    })
    .to_string()
    .into_bytes()
}

/// A `payment_intent.*` event. `status` is the intent's status in the body; `failure` the
/// decline code of a `payment_intent.payment_failed`.
pub fn payment_intent_event(
    event_id: &str,
    event_type: &str,
    spec: &IntentSpec<'_>,
    created: i64,
    failure: Option<&str>,
) -> Vec<u8> {
    let status = match event_type {
        "payment_intent.succeeded" => "succeeded",
        "payment_intent.canceled" => "canceled",
        "payment_intent.requires_action" => "requires_action",
        "payment_intent.processing" => "processing",
        _ => "requires_payment_method",
    };
    let received = if status == "succeeded" {
        spec.amount_minor
    } else {
        0
    };
    let last_error = failure.map(|code| {
        json!({ "type": "card_error", "code": "card_declined", "decline_code": code,
                "message": "Your card was declined." })
    });
    envelope(
        event_id,
        event_type,
        created,
        json!({
            "id": spec.intent_id,
            "object": "payment_intent",
            "amount": spec.amount_minor,
            "amount_received": received,
            "currency": spec.currency,
            "metadata": metadata(spec),
            "latest_charge": (status == "succeeded")
                .then(|| crate::simulated::charge_of(spec.intent_id)),
            "status": status,
            "last_payment_error": last_error,
        }),
    )
}

/// A `charge.refunded` event: `amount_refunded_minor` is the CUMULATIVE refunded amount.
/// Like Stripe's charges it carries no metadata of ours, only the intent id.
pub fn charge_refunded_event(
    event_id: &str,
    spec: &IntentSpec<'_>,
    charge_id: &str,
    amount_refunded_minor: i64,
    refund_id: Option<&str>,
    created: i64,
) -> Vec<u8> {
    let refunds: Vec<Value> = refund_id
        .map(|r| json!({ "id": r, "object": "refund", "created": created }))
        .into_iter()
        .collect();
    envelope(
        event_id,
        "charge.refunded",
        created,
        json!({
            "id": charge_id,
            "object": "charge",
            "amount": spec.amount_minor,
            "amount_refunded": amount_refunded_minor,
            "currency": spec.currency,
            "payment_intent": spec.intent_id,
            "refunded": amount_refunded_minor >= spec.amount_minor,
            "metadata": {},
            "refunds": { "object": "list", "data": refunds, "has_more": false },
        }),
    )
}

/// A dispute (chargeback) as the provider would describe it.
#[derive(Debug, Clone)]
pub struct DisputeSpec<'a> {
    pub dispute_id: &'a str,
    pub charge_id: &'a str,
    /// `None` for payloads of API versions whose disputes name only the charge.
    pub intent_id: Option<&'a str>,
    pub amount_minor: i64,
    /// Lowercase, as Stripe sends it (`"eur"`).
    pub currency: &'a str,
    pub reason: &'a str,
    pub status: &'a str,
}

/// A `charge.dispute.created` or `charge.dispute.closed` event.
pub fn dispute_event(
    event_id: &str,
    event_type: &str,
    spec: &DisputeSpec<'_>,
    created: i64,
) -> Vec<u8> {
    let mut object = json!({
        "id": spec.dispute_id,
        "object": "dispute",
        "amount": spec.amount_minor,
        "currency": spec.currency,
        "charge": spec.charge_id,
        "reason": spec.reason,
        "status": spec.status,
        "metadata": {},
    });
    if let Some(intent) = spec.intent_id {
        object["payment_intent"] = json!(intent);
    }
    envelope(event_id, event_type, created, object)
}
