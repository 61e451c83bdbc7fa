//! Human-readable one-line descriptions of events, shared by the order-history timeline and the
//! support timeline, and what else those read models take from an event (its charge and dispute).
//! The status each event leaves its aggregate in, and the intent a payment event reports, are the
//! domain's own (`OrderEvent::status_after`, `PaymentEvent::status_after`,
//! `PaymentEvent::intent_id`), so that views agree with the write side without re-deciding
//! anything.

use domain::{Money, OrderEvent, PaymentEvent};
use serde::{Deserialize, Serialize};

/// The latest known state of a dispute (chargeback) on an order's payment, as the order view
/// and the support view show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DisputeSchema))]
pub struct DisputeView {
    pub dispute_id: String,
    pub reason: String,
    /// The provider's status: `needs_response`, `under_review`, `won`, `lost`, ...
    pub status: String,
    /// The disputed amount, when the provider reported it.
    #[serde(default)]
    pub amount: Option<Money>,
    /// What the lost dispute took back from the shop; `None` unless it was lost.
    #[serde(default)]
    pub withdrawn: Option<Money>,
}

/// The dispute state after a payment event, given the state before (`None` when the event is
/// not about a dispute). What one report leaves out (an amount) is kept from the earlier one
/// about the same dispute.
pub(crate) fn dispute_after(
    before: Option<&DisputeView>,
    event: &PaymentEvent,
) -> Option<DisputeView> {
    let PaymentEvent::PaymentDisputed {
        dispute_id,
        reason,
        status,
        amount,
        withdrawn,
        ..
    } = event
    else {
        return None;
    };
    let same = before.filter(|b| &b.dispute_id == dispute_id);
    Some(DisputeView {
        dispute_id: dispute_id.clone(),
        reason: reason.clone(),
        status: status.clone(),
        amount: amount
            .clone()
            .or_else(|| same.and_then(|b| b.amount.clone())),
        withdrawn: withdrawn
            .clone()
            .or_else(|| same.and_then(|b| b.withdrawn.clone())),
    })
}

/// The provider's charge id an event names, if any.
pub(crate) fn payment_charge(event: &PaymentEvent) -> Option<&str> {
    match event {
        PaymentEvent::PaymentSucceeded { charge_id, .. } => charge_id.as_deref(),
        _ => None,
    }
}

pub(crate) fn describe_order(event: &OrderEvent) -> String {
    match event {
        OrderEvent::OrderPlaced { lines, total, .. } => {
            let n = lines.len();
            let plural = if n == 1 { "line" } else { "lines" };
            format!("order placed: {n} {plural}, total {total}")
        }
        OrderEvent::OrderPaid { amount, .. } => format!("payment of {amount} received"),
        OrderEvent::OrderPaymentFailed { reason, .. } => format!("payment failed: {reason}"),
        OrderEvent::OrderCancelled {
            reason, was_paid, ..
        } => {
            if *was_paid {
                format!("order cancelled after payment, refund due: {reason}")
            } else {
                format!("order cancelled: {reason}")
            }
        }
        OrderEvent::OrderExpired { .. } => "order expired without payment".to_owned(),
        OrderEvent::OrderShipped { tracking, .. } => match tracking {
            Some(t) => format!("order shipped, tracking {t}"),
            None => "order shipped".to_owned(),
        },
        OrderEvent::OrderDelivered { .. } => "order delivered".to_owned(),
        OrderEvent::OrderRefunded {
            refund_id,
            amount,
            refunded_total,
            full,
            ..
        } => {
            let scope = if *full { "full" } else { "partial" };
            format!("{scope} refund {refund_id} of {amount} ({refunded_total} refunded in total)")
        }
    }
}

pub(crate) fn describe_payment(event: &PaymentEvent) -> String {
    match event {
        PaymentEvent::PaymentRequested { amount, .. } => format!("payment of {amount} requested"),
        PaymentEvent::PaymentIntentCreated { intent_id, .. } => {
            format!("payment intent {intent_id} created")
        }
        PaymentEvent::PaymentRequiresAction { intent_id, .. } => {
            format!("payment intent {intent_id} requires customer action")
        }
        PaymentEvent::PaymentProcessing { intent_id, .. } => {
            format!("payment intent {intent_id} processing")
        }
        PaymentEvent::PaymentSucceeded {
            intent_id, amount, ..
        } => format!("payment intent {intent_id} succeeded: {amount} captured"),
        PaymentEvent::PaymentFailed {
            intent_id, reason, ..
        } => format!("payment intent {intent_id} failed: {reason}"),
        PaymentEvent::PaymentCanceled { intent_id, .. } => {
            format!("payment intent {intent_id} canceled")
        }
        PaymentEvent::PaymentRefunded {
            refund_id,
            amount,
            refunded_total,
            ..
        } => {
            format!("provider refund {refund_id} of {amount} ({refunded_total} refunded in total)")
        }
        PaymentEvent::PaymentDisputed {
            dispute_id,
            reason,
            status,
            amount,
            withdrawn,
            ..
        } => {
            let mut line = format!("dispute {dispute_id} {status}: {reason}");
            match (withdrawn, amount) {
                (Some(lost), _) => line.push_str(&format!(" ({lost} withdrawn)")),
                (None, Some(amount)) => line.push_str(&format!(" ({amount} disputed)")),
                (None, None) => {}
            }
            line
        }
    }
}
