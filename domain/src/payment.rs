//! The payment aggregate: one payment per order, driven by facts reported by the payment
//! provider (Stripe webhooks and API answers).
//!
//! Provider facts arrive late, twice or out of order, so the rules are:
//!
//! - the status only ever moves to a strictly higher [`PaymentStatus::rank`]; a fact that would
//!   move it sideways or backwards is an idempotent no-op (`Ok(vec![])`), never an error;
//! - replaying the same fact is a no-op;
//! - a refund reported before the success it implies records that success first (see
//!   `RecordRefunded`).

use crate::aggregate::{aggregate, domain_events, StreamType};
use crate::ids::{OrderId, PaymentId};
use crate::money::{Currency, Money, MoneyError};
use crate::text::{is_reference, named_enum};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Longest provider reference (intent, refund, dispute or charge id).
pub const MAX_REFERENCE_CHARS: usize = 255;

named_enum! {
    /// Where a payment stands. Ordered by [`rank`](PaymentStatus::rank): a payment only moves to
    /// a higher rank. A dispute is not a status: it is recorded in [`Payment::dispute`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum PaymentStatus {
        /// Not requested yet.
        #[default]
        New = "new",
        Requested = "requested",
        IntentCreated = "intent_created",
        RequiresAction = "requires_action",
        Processing = "processing",
        Failed = "failed",
        Canceled = "canceled",
        Succeeded = "succeeded",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
    }
}

impl PaymentStatus {
    /// Position in the forward order, from New (0) to Refunded (9): the declaration order.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// True once money was taken (succeeded, partially refunded or refunded).
    pub fn is_captured(self) -> bool {
        self.rank() >= PaymentStatus::Succeeded.rank()
    }
}

/// The latest known state of a dispute (chargeback) on the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeInfo {
    pub dispute_id: String,
    pub reason: String,
    /// The provider's dispute status, for example "needs_response", "won" or "lost".
    pub status: String,
    /// The disputed amount, when the provider reported it (`PaymentDisputed` v2 on).
    #[serde(default)]
    pub amount: Option<Money>,
}

/// State of one payment stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: Option<PaymentId>,
    pub order_id: Option<OrderId>,
    /// The requested amount.
    pub amount: Option<Money>,
    pub status: PaymentStatus,
    /// The provider's intent. Its client secret is never part of the state (nor of any event):
    /// it is asked of the provider whenever the storefront needs it.
    pub intent_id: Option<String>,
    /// The amount actually taken, once succeeded (at most the requested amount).
    pub captured: Option<Money>,
    /// Cumulative refunded amount.
    pub refunded: Option<Money>,
    pub refund_ids: BTreeSet<String>,
    pub dispute: Option<DisputeInfo>,
    /// What lost disputes took back from the merchant, in total.
    #[serde(default)]
    pub withdrawn: Option<Money>,
    /// The provider's charge id, once a success reported it: charge and dispute events that name
    /// no intent are matched by it.
    #[serde(default)]
    pub charge_id: Option<String>,
    pub failure_reason: Option<String>,
    /// Keys of the provider facts recorded so far (see [`PaymentEvent::fact_key`]).
    pub seen_facts: BTreeSet<String>,
}

impl Payment {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// What is left to refund of `captured`: the amount taken less the refunds so far.
    pub fn refundable(&self, captured: &Money) -> Result<Money, MoneyError> {
        match &self.refunded {
            Some(refunded) => captured.checked_sub(refunded),
            None => Ok(captured.clone()),
        }
    }

    /// Checks an intent id reported by the provider against the one on record (if any).
    fn check_intent(&self, intent_id: &str) -> Result<(), PaymentError> {
        if !is_reference(intent_id, MAX_REFERENCE_CHARS) {
            return Err(PaymentError::InvalidReference { field: "intent_id" });
        }
        match &self.intent_id {
            Some(known) if known != intent_id => Err(PaymentError::IntentMismatch {
                expected: known.clone(),
                actual: intent_id.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// True when moving to `to` goes strictly forward.
    fn moves_forward(&self, to: PaymentStatus) -> bool {
        to.rank() > self.status.rank()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Request {
        payment_id: PaymentId,
        order_id: OrderId,
        amount: Money,
    },
    RecordIntentCreated {
        intent_id: String,
    },
    RecordRequiresAction {
        intent_id: String,
    },
    RecordProcessing {
        intent_id: String,
    },
    RecordSucceeded {
        intent_id: String,
        /// The charge that took the money, when the provider names it.
        charge_id: Option<String>,
        amount: Money,
        at: DateTime<Utc>,
    },
    RecordFailed {
        intent_id: String,
        reason: String,
        at: DateTime<Utc>,
    },
    RecordCanceled {
        intent_id: String,
        at: DateTime<Utc>,
    },
    /// `amount_refunded_total` is CUMULATIVE: the total refunded on the charge so far (Stripe's
    /// `charge.refunded` semantics), not this refund's amount.
    RecordRefunded {
        refund_id: String,
        amount_refunded_total: Money,
        at: DateTime<Utc>,
    },
    RecordDisputed {
        dispute_id: String,
        reason: String,
        status: String,
        /// The disputed amount, when the provider reports it.
        amount: Option<Money>,
        at: DateTime<Utc>,
    },
}

domain_events! {
    #[derive(Debug, Clone, PartialEq)]
    pub enum PaymentEvent in event_names {
        PAYMENT_REQUESTED = "PaymentRequested", version 1 => PaymentRequested {
            payment_id: PaymentId,
            order_id: OrderId,
            amount: Money,
        },
        /// Version 2 dropped `client_secret_ref`, which held the provider's client secret: a
        /// secret has no place in the history. Version 1 payloads are upcast without it.
        PAYMENT_INTENT_CREATED = "PaymentIntentCreated", version 2 => PaymentIntentCreated {
            payment_id: PaymentId,
            intent_id: String,
        },
        PAYMENT_REQUIRES_ACTION = "PaymentRequiresAction", version 1 => PaymentRequiresAction {
            payment_id: PaymentId,
            intent_id: String,
        },
        PAYMENT_PROCESSING = "PaymentProcessing", version 1 => PaymentProcessing {
            payment_id: PaymentId,
            intent_id: String,
        },
        /// Version 2 added `charge_id`; version 1 payloads are upcast with none.
        PAYMENT_SUCCEEDED = "PaymentSucceeded", version 2 => PaymentSucceeded {
            payment_id: PaymentId,
            order_id: OrderId,
            intent_id: String,
            charge_id: Option<String>,
            amount: Money,
            at: DateTime<Utc>,
        },
        PAYMENT_FAILED = "PaymentFailed", version 1 => PaymentFailed {
            payment_id: PaymentId,
            order_id: OrderId,
            intent_id: String,
            reason: String,
            at: DateTime<Utc>,
        },
        PAYMENT_CANCELED = "PaymentCanceled", version 1 => PaymentCanceled {
            payment_id: PaymentId,
            order_id: OrderId,
            intent_id: String,
            at: DateTime<Utc>,
        },
        /// `amount` is this refund's increment; `refunded_total` the cumulative amount.
        PAYMENT_REFUNDED = "PaymentRefunded", version 1 => PaymentRefunded {
            payment_id: PaymentId,
            order_id: OrderId,
            refund_id: String,
            amount: Money,
            refunded_total: Money,
            /// True when `refunded_total` equals the captured amount.
            full: bool,
            at: DateTime<Utc>,
        },
        /// Version 2 added `amount` (disputed) and `withdrawn` (what a lost dispute took back);
        /// version 1 payloads are upcast with neither.
        PAYMENT_DISPUTED = "PaymentDisputed", version 2 => PaymentDisputed {
            payment_id: PaymentId,
            order_id: OrderId,
            dispute_id: String,
            reason: String,
            status: String,
            amount: Option<Money>,
            withdrawn: Option<Money>,
            at: DateTime<Utc>,
        },
    }
    upcast = upcast;
}

impl PaymentEvent {
    /// The status the payment is in after this event; `None` when the event leaves it as it was
    /// (a dispute is recorded beside the status). Folding and the read models both take the
    /// status from here.
    pub fn status_after(&self) -> Option<PaymentStatus> {
        Some(match self {
            PaymentEvent::PaymentRequested { .. } => PaymentStatus::Requested,
            PaymentEvent::PaymentIntentCreated { .. } => PaymentStatus::IntentCreated,
            PaymentEvent::PaymentRequiresAction { .. } => PaymentStatus::RequiresAction,
            PaymentEvent::PaymentProcessing { .. } => PaymentStatus::Processing,
            PaymentEvent::PaymentSucceeded { .. } => PaymentStatus::Succeeded,
            PaymentEvent::PaymentFailed { .. } => PaymentStatus::Failed,
            PaymentEvent::PaymentCanceled { .. } => PaymentStatus::Canceled,
            PaymentEvent::PaymentRefunded { full: true, .. } => PaymentStatus::Refunded,
            PaymentEvent::PaymentRefunded { full: false, .. } => PaymentStatus::PartiallyRefunded,
            PaymentEvent::PaymentDisputed { .. } => return None,
        })
    }

    /// The order a payment event names in its payload (`None` for the events that only carry the
    /// payment id: the stream's `PaymentRequested` names it).
    pub fn order_id(&self) -> Option<&OrderId> {
        match self {
            PaymentEvent::PaymentRequested { order_id, .. }
            | PaymentEvent::PaymentSucceeded { order_id, .. }
            | PaymentEvent::PaymentFailed { order_id, .. }
            | PaymentEvent::PaymentCanceled { order_id, .. }
            | PaymentEvent::PaymentRefunded { order_id, .. }
            | PaymentEvent::PaymentDisputed { order_id, .. } => Some(order_id),
            PaymentEvent::PaymentIntentCreated { .. }
            | PaymentEvent::PaymentRequiresAction { .. }
            | PaymentEvent::PaymentProcessing { .. } => None,
        }
    }

    /// The provider's intent an event reports, if any. Folding and the read models both take
    /// the intent id from here.
    pub fn intent_id(&self) -> Option<&str> {
        match self {
            PaymentEvent::PaymentIntentCreated { intent_id, .. }
            | PaymentEvent::PaymentRequiresAction { intent_id, .. }
            | PaymentEvent::PaymentProcessing { intent_id, .. }
            | PaymentEvent::PaymentSucceeded { intent_id, .. }
            | PaymentEvent::PaymentFailed { intent_id, .. }
            | PaymentEvent::PaymentCanceled { intent_id, .. } => Some(intent_id),
            PaymentEvent::PaymentRequested { .. }
            | PaymentEvent::PaymentRefunded { .. }
            | PaymentEvent::PaymentDisputed { .. } => None,
        }
    }

    /// The key under which a provider fact is remembered in [`Payment::seen_facts`];
    /// `None` for `PaymentRequested`, which is our own request rather than a provider fact.
    pub fn fact_key(&self) -> Option<String> {
        match self {
            PaymentEvent::PaymentRequested { .. } => None,
            PaymentEvent::PaymentIntentCreated { intent_id, .. } => {
                Some(format!("intent_created:{intent_id}"))
            }
            PaymentEvent::PaymentRequiresAction { intent_id, .. } => {
                Some(format!("requires_action:{intent_id}"))
            }
            PaymentEvent::PaymentProcessing { intent_id, .. } => {
                Some(format!("processing:{intent_id}"))
            }
            PaymentEvent::PaymentSucceeded { intent_id, .. } => {
                Some(format!("succeeded:{intent_id}"))
            }
            PaymentEvent::PaymentFailed { intent_id, .. } => Some(format!("failed:{intent_id}")),
            PaymentEvent::PaymentCanceled { intent_id, .. } => {
                Some(format!("canceled:{intent_id}"))
            }
            PaymentEvent::PaymentRefunded {
                refund_id,
                refunded_total,
                ..
            } => Some(format!(
                "refunded:{refund_id}:{}",
                refunded_total.to_minor()
            )),
            PaymentEvent::PaymentDisputed {
                dispute_id, status, ..
            } => Some(dispute_fact_key(dispute_id, status)),
        }
    }

    /// The dispute a `PaymentDisputed` event reports, as the state keeps it; `None` for any
    /// other event.
    pub fn dispute(&self) -> Option<DisputeInfo> {
        match self {
            PaymentEvent::PaymentDisputed {
                dispute_id,
                reason,
                status,
                amount,
                ..
            } => Some(DisputeInfo {
                dispute_id: dispute_id.clone(),
                reason: reason.clone(),
                status: status.clone(),
                amount: amount.clone(),
            }),
            _ => None,
        }
    }
}

fn dispute_fact_key(dispute_id: &str, status: &str) -> String {
    format!("dispute:{dispute_id}:{status}")
}

/// The provider's dispute status that means the merchant lost the money.
pub const DISPUTE_LOST: &str = "lost";

/// Brings an older payload to the current shape of its event type: fields added by a later
/// version are absent (null) in older payloads, and fields a later version dropped are removed,
/// so that re-encoding the upcast event (every read path does) never carries them on.
fn upcast(
    event_type: &str,
    version: u32,
    mut payload: serde_json::Value,
) -> Result<serde_json::Value, crate::aggregate::DecodeError> {
    let (added, dropped): (&[&str], &[&str]) = match (event_type, version) {
        (event_names::PAYMENT_SUCCEEDED, 1) => (&["charge_id"], &[]),
        (event_names::PAYMENT_DISPUTED, 1) => (&["amount", "withdrawn"], &[]),
        // Version 1 stored the provider's client secret under this name.
        (event_names::PAYMENT_INTENT_CREATED, 1) => (&[], &["client_secret_ref"]),
        _ => return Ok(payload),
    };
    let fields =
        payload
            .as_object_mut()
            .ok_or_else(|| crate::aggregate::DecodeError::Malformed {
                event_type: event_type.to_owned(),
                version,
                reason: "payload is not an object".to_owned(),
            })?;
    for field in added {
        fields.entry(*field).or_insert(serde_json::Value::Null);
    }
    for field in dropped {
        fields.remove(*field);
    }
    Ok(payload)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("payment not found")]
    NotFound,
    #[error("payment already exists")]
    AlreadyExists,
    #[error("payment amount must be greater than zero")]
    ZeroAmount,
    #[error("{field} must be 1 to 255 characters without surrounding spaces")]
    InvalidReference { field: &'static str },
    #[error("intent {actual} does not belong to this payment (expected {expected})")]
    IntentMismatch { expected: String, actual: String },
    #[error("amount in {actual} does not match the payment currency {expected}")]
    CurrencyMismatch {
        expected: Currency,
        actual: Currency,
    },
    #[error("captured {captured} exceeds the requested {requested}")]
    AmountExceedsRequested { requested: Money, captured: Money },
    #[error("refunded total {requested} exceeds the captured {amount}")]
    RefundExceedsAmount { requested: Money, amount: Money },
    #[error("payment has not been captured")]
    NotCaptured,
    #[error("a disputed amount must be above zero and at most the payment's, not {amount}")]
    InvalidDisputeAmount { amount: Money },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Payment {
    /// Decides a command: pure, synchronous; `Aggregate::handle` calls it.
    pub fn decide(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        match (&self.id, command) {
            (
                None,
                PaymentCommand::Request {
                    payment_id,
                    order_id,
                    amount,
                },
            ) => {
                if amount.is_zero() {
                    return Err(PaymentError::ZeroAmount);
                }
                Ok(vec![PaymentEvent::PaymentRequested {
                    payment_id,
                    order_id,
                    amount,
                }])
            }
            (Some(_), PaymentCommand::Request { .. }) => Err(PaymentError::AlreadyExists),
            (None, _) => Err(PaymentError::NotFound),
            (Some(payment_id), command) => match (&self.order_id, &self.amount) {
                (Some(order_id), Some(amount)) => ExistingPayment {
                    payment: self,
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    amount,
                }
                .decide(command),
                // `PaymentRequested` sets the id, the order and the amount together, so a stream
                // with an id always has the other two.
                _ => Err(PaymentError::NotFound),
            },
        }
    }

    /// Folds one event into the state. Never fails: events are facts. `Aggregate::apply`
    /// calls it.
    pub fn evolve(&mut self, event: &PaymentEvent) {
        if let Some(key) = event.fact_key() {
            self.seen_facts.insert(key);
        }
        if let Some(status) = event.status_after() {
            self.status = status;
        }
        if let Some(intent_id) = event.intent_id() {
            self.intent_id = Some(intent_id.to_owned());
        }
        match event {
            PaymentEvent::PaymentRequested {
                payment_id,
                order_id,
                amount,
            } => {
                self.id = Some(payment_id.clone());
                self.order_id = Some(order_id.clone());
                self.amount = Some(amount.clone());
            }
            PaymentEvent::PaymentSucceeded {
                charge_id, amount, ..
            } => {
                if charge_id.is_some() {
                    self.charge_id = charge_id.clone();
                }
                self.captured = Some(amount.clone());
            }
            PaymentEvent::PaymentFailed { reason, .. } => {
                self.failure_reason = Some(reason.clone());
            }
            PaymentEvent::PaymentRefunded {
                refund_id,
                refunded_total,
                ..
            } => {
                self.refunded = Some(refunded_total.clone());
                self.refund_ids.insert(refund_id.clone());
            }
            PaymentEvent::PaymentDisputed { withdrawn, .. } => {
                self.dispute = event.dispute();
                if let Some(lost) = withdrawn {
                    self.withdrawn = Some(match &self.withdrawn {
                        // Decisions keep one currency; on odd data the latest amount stands.
                        Some(before) => before.checked_add(lost).unwrap_or_else(|_| lost.clone()),
                        None => lost.clone(),
                    });
                }
            }
            // Their status and intent are all they change.
            PaymentEvent::PaymentIntentCreated { .. }
            | PaymentEvent::PaymentRequiresAction { .. }
            | PaymentEvent::PaymentProcessing { .. }
            | PaymentEvent::PaymentCanceled { .. } => {}
        }
    }
}

aggregate!(
    Payment,
    StreamType::Payment,
    PaymentCommand,
    PaymentEvent,
    PaymentError
);

/// A payment that exists, with the fields every later event needs.
struct ExistingPayment<'a> {
    payment: &'a Payment,
    payment_id: PaymentId,
    order_id: OrderId,
    amount: &'a Money,
}

impl ExistingPayment<'_> {
    fn decide(self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        let p = self.payment;
        match command {
            PaymentCommand::Request { .. } => Err(PaymentError::AlreadyExists),
            PaymentCommand::RecordIntentCreated { intent_id } => {
                if !p.moves_forward(PaymentStatus::IntentCreated) {
                    return Ok(vec![]);
                }
                p.check_intent(&intent_id)?;
                Ok(vec![PaymentEvent::PaymentIntentCreated {
                    payment_id: self.payment_id,
                    intent_id,
                }])
            }
            PaymentCommand::RecordRequiresAction { intent_id } => {
                if !p.moves_forward(PaymentStatus::RequiresAction) {
                    return Ok(vec![]);
                }
                p.check_intent(&intent_id)?;
                Ok(vec![PaymentEvent::PaymentRequiresAction {
                    payment_id: self.payment_id,
                    intent_id,
                }])
            }
            PaymentCommand::RecordProcessing { intent_id } => {
                if !p.moves_forward(PaymentStatus::Processing) {
                    return Ok(vec![]);
                }
                p.check_intent(&intent_id)?;
                Ok(vec![PaymentEvent::PaymentProcessing {
                    payment_id: self.payment_id,
                    intent_id,
                }])
            }
            PaymentCommand::RecordSucceeded {
                intent_id,
                charge_id,
                amount,
                at,
            } => {
                // Allowed from every earlier status, failed and canceled included: the provider
                // says the money was taken, and reality wins.
                if !p.moves_forward(PaymentStatus::Succeeded) {
                    return Ok(vec![]);
                }
                p.check_intent(&intent_id)?;
                self.check_currency(&amount)?;
                if amount.cmp_amount(self.amount)? == Ordering::Greater {
                    return Err(PaymentError::AmountExceedsRequested {
                        requested: self.amount.clone(),
                        captured: amount,
                    });
                }
                if charge_id
                    .as_deref()
                    .is_some_and(|c| !is_reference(c, MAX_REFERENCE_CHARS))
                {
                    return Err(PaymentError::InvalidReference { field: "charge_id" });
                }
                Ok(vec![PaymentEvent::PaymentSucceeded {
                    payment_id: self.payment_id,
                    order_id: self.order_id,
                    intent_id,
                    charge_id,
                    amount,
                    at,
                }])
            }
            PaymentCommand::RecordFailed {
                intent_id,
                reason,
                at,
            } => {
                if !p.moves_forward(PaymentStatus::Failed) {
                    return Ok(vec![]);
                }
                p.check_intent(&intent_id)?;
                Ok(vec![PaymentEvent::PaymentFailed {
                    payment_id: self.payment_id,
                    order_id: self.order_id,
                    intent_id,
                    reason,
                    at,
                }])
            }
            PaymentCommand::RecordCanceled { intent_id, at } => {
                if !p.moves_forward(PaymentStatus::Canceled) {
                    return Ok(vec![]);
                }
                p.check_intent(&intent_id)?;
                Ok(vec![PaymentEvent::PaymentCanceled {
                    payment_id: self.payment_id,
                    order_id: self.order_id,
                    intent_id,
                    at,
                }])
            }
            PaymentCommand::RecordRefunded {
                refund_id,
                amount_refunded_total,
                at,
            } => self.decide_refund(refund_id, amount_refunded_total, at),
            PaymentCommand::RecordDisputed {
                dispute_id,
                reason,
                status,
                amount,
                at,
            } => {
                if !is_reference(&dispute_id, MAX_REFERENCE_CHARS) {
                    return Err(PaymentError::InvalidReference {
                        field: "dispute_id",
                    });
                }
                if p.seen_facts
                    .contains(&dispute_fact_key(&dispute_id, &status))
                {
                    return Ok(vec![]);
                }
                if let Some(amount) = &amount {
                    self.check_currency(amount)?;
                    if amount.is_zero() || amount.cmp_amount(self.amount)? == Ordering::Greater {
                        return Err(PaymentError::InvalidDisputeAmount {
                            amount: amount.clone(),
                        });
                    }
                }
                let withdrawn = (status == DISPUTE_LOST).then(|| amount.clone()).flatten();
                Ok(vec![PaymentEvent::PaymentDisputed {
                    payment_id: self.payment_id,
                    order_id: self.order_id,
                    dispute_id,
                    reason,
                    status,
                    amount,
                    withdrawn,
                    at,
                }])
            }
        }
    }

    /// A cumulative refund total reported by the provider.
    ///
    /// Webhooks may arrive out of order: a refund before the success it implies. A refund means
    /// the charge succeeded, so in that case a `PaymentSucceeded` for the full requested amount
    /// (with the intent on record and the refund's time) is emitted first, then the refund.
    fn decide_refund(
        self,
        refund_id: String,
        refunded_total: Money,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let p = self.payment;
        if !is_reference(&refund_id, MAX_REFERENCE_CHARS) {
            return Err(PaymentError::InvalidReference { field: "refund_id" });
        }
        self.check_currency(&refunded_total)?;
        let already = p
            .refunded
            .clone()
            .unwrap_or_else(|| Money::zero(self.amount.currency()));
        if refunded_total.cmp_amount(&already)? != Ordering::Greater {
            return Ok(vec![]);
        }
        let mut events = Vec::with_capacity(2);
        let captured = if p.status.is_captured() {
            // `PaymentSucceeded` sets `captured`; the requested amount is only a fallback.
            p.captured.clone().unwrap_or_else(|| self.amount.clone())
        } else {
            let intent_id = p.intent_id.clone().ok_or(PaymentError::NotCaptured)?;
            events.push(PaymentEvent::PaymentSucceeded {
                payment_id: self.payment_id.clone(),
                order_id: self.order_id.clone(),
                intent_id,
                charge_id: None,
                amount: self.amount.clone(),
                at,
            });
            self.amount.clone()
        };
        let full = match refunded_total.cmp_amount(&captured)? {
            Ordering::Greater => {
                return Err(PaymentError::RefundExceedsAmount {
                    requested: refunded_total,
                    amount: captured,
                })
            }
            Ordering::Equal => true,
            Ordering::Less => false,
        };
        events.push(PaymentEvent::PaymentRefunded {
            payment_id: self.payment_id,
            order_id: self.order_id,
            refund_id,
            amount: refunded_total.checked_sub(&already)?,
            refunded_total,
            full,
            at,
        });
        Ok(events)
    }

    fn check_currency(&self, money: &Money) -> Result<(), PaymentError> {
        if money.currency() == self.amount.currency() {
            Ok(())
        } else {
            Err(PaymentError::CurrencyMismatch {
                expected: self.amount.currency(),
                actual: money.currency(),
            })
        }
    }
}
