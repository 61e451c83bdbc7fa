//! Provider payment facts (Stripe webhooks) and support refunds.
//!
//! An adapter (infrastructure's `stripe` module) verifies and parses a provider event into a
//! [`ProviderEvent`]; [`Payments::apply`] resolves which of our payments it is about and records
//! it on the Payment aggregate.
//!
//! Hidden contracts:
//!
//! - **Dedupe in the same commit.** Every provider event runs under the command id
//!   `stripe:<event id>`. The idempotency record is written in the SAME commit as the payment
//!   events it causes (or alone, when the fact changes nothing), so two concurrent deliveries of
//!   one event have exactly one effect: the loser gets the first answer back as a replay.
//! - **Never a retry loop for a fact we cannot use.** Unknown event types, and facts about
//!   payments that are not ours, answer `Ok(Ignored)`; facts the Payment aggregate refuses for
//!   good (an intent that belongs to another payment, an amount above the requested one) answer
//!   `Ok(Rejected)` and are logged as errors. Only infrastructure failures (store, read model)
//!   are errors, so the webhook answers 5xx and the provider retries.
//! - **Order does not matter.** Payment state only moves forward, so out-of-order and repeated
//!   deliveries converge on the same state.

use crate::error::CommandError;
use crate::ports::{PaymentGateway, RefundResult};
use crate::process::refund_and_record;
use crate::service::{CommandContext, Executed, IdempotencyKey};
use crate::shop::Shop;
use crate::store::{Actor, Metadata};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Currency, Money, Order, OrderId, Payment, PaymentCommand, PaymentId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// References to our own ids that a provider object carries (Stripe: `metadata.payment_id` and
/// `metadata.order_id`, set when we create the PaymentIntent). Unvalidated: they come from the
/// provider and are checked when resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefs {
    pub payment_id: Option<String>,
    pub order_id: Option<String>,
}

impl PaymentRefs {
    /// Reads `payment_id` and `order_id` from a provider metadata map.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        let get = |k: &str| {
            metadata
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            payment_id: get("payment_id"),
            order_id: get("order_id"),
        }
    }
}

/// What a provider event says about a payment, in the provider's terms (minor units, lowercase
/// currency codes, provider ids). Built by the provider adapter; mapped to Payment commands here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum ProviderFact {
    /// `payment_intent.succeeded`: the money was taken.
    IntentSucceeded {
        intent_id: String,
        /// The charge that took the money (Stripe: `latest_charge`, or the first of `charges`
        /// in older API versions), when the payload names it.
        #[serde(default)]
        charge_id: Option<String>,
        /// The amount received (the intent amount when the provider does not report it).
        amount_minor: i64,
        /// ISO code as the provider sends it (Stripe: lowercase).
        currency: String,
        refs: PaymentRefs,
    },
    /// `payment_intent.payment_failed`.
    IntentFailed {
        intent_id: String,
        /// The decline code, error code or message, whichever the provider gave first.
        reason: String,
        refs: PaymentRefs,
    },
    /// `payment_intent.canceled`.
    IntentCanceled {
        intent_id: String,
        refs: PaymentRefs,
    },
    /// `payment_intent.requires_action` (3-D Secure and friends).
    IntentRequiresAction {
        intent_id: String,
        refs: PaymentRefs,
    },
    /// `payment_intent.processing`.
    IntentProcessing {
        intent_id: String,
        refs: PaymentRefs,
    },
    /// `charge.refunded`: refunds issued by us or from the dashboard.
    ChargeRefunded {
        /// The charge's PaymentIntent, when the charge came from one.
        intent_id: Option<String>,
        charge_id: String,
        /// CUMULATIVE amount refunded on the charge so far.
        amount_refunded_minor: i64,
        currency: String,
        /// The latest refund's id, or one synthesized from the charge id and the cumulative
        /// amount when the payload lists none (it is only used as a reference).
        refund_id: String,
        refs: PaymentRefs,
    },
    /// `charge.dispute.created`.
    DisputeCreated(Dispute),
    /// `charge.dispute.closed` (`status` is the outcome: won, lost, ...).
    DisputeClosed(Dispute),
    /// Any other event type: acknowledged and ignored.
    Ignored { event_type: String },
}

/// A dispute as the provider reports it, when it opens and when it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    pub dispute_id: String,
    pub intent_id: Option<String>,
    pub charge_id: Option<String>,
    pub reason: String,
    pub status: String,
    /// The disputed amount in minor units, with its currency, when the payload has them.
    #[serde(default)]
    pub amount_minor: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    pub refs: PaymentRefs,
}

impl ProviderFact {
    /// The provider's intent id and our ids the fact carries: every fact but `Ignored` carries
    /// our ids; an intent fact always names its intent, the others when the provider knows it.
    fn intent_and_refs(&self) -> (Option<&str>, Option<&PaymentRefs>) {
        match self {
            ProviderFact::IntentSucceeded {
                intent_id, refs, ..
            }
            | ProviderFact::IntentFailed {
                intent_id, refs, ..
            }
            | ProviderFact::IntentCanceled { intent_id, refs }
            | ProviderFact::IntentRequiresAction { intent_id, refs }
            | ProviderFact::IntentProcessing { intent_id, refs } => (Some(intent_id), Some(refs)),
            ProviderFact::ChargeRefunded {
                intent_id, refs, ..
            } => (intent_id.as_deref(), Some(refs)),
            ProviderFact::DisputeCreated(d) | ProviderFact::DisputeClosed(d) => {
                (d.intent_id.as_deref(), Some(&d.refs))
            }
            ProviderFact::Ignored { .. } => (None, None),
        }
    }

    /// The provider's intent id the fact is about, when it names one.
    pub fn intent_id(&self) -> Option<&str> {
        self.intent_and_refs().0
    }

    /// The provider's charge id the fact is about, when it names one.
    pub fn charge_id(&self) -> Option<&str> {
        match self {
            ProviderFact::IntentSucceeded { charge_id, .. } => charge_id.as_deref(),
            ProviderFact::DisputeCreated(d) | ProviderFact::DisputeClosed(d) => {
                d.charge_id.as_deref()
            }
            ProviderFact::ChargeRefunded { charge_id, .. } => Some(charge_id),
            _ => None,
        }
    }

    /// Our ids as carried by the provider object.
    pub fn refs(&self) -> Option<&PaymentRefs> {
        self.intent_and_refs().1
    }
}

/// One verified provider event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// The provider's event id (Stripe `evt_...`): the dedupe key.
    pub event_id: String,
    /// The provider's event type, for example `payment_intent.succeeded`.
    pub event_type: String,
    /// When the provider says the event happened; used as the facts' `at`.
    pub occurred_at: DateTime<Utc>,
    pub livemode: bool,
    pub fact: ProviderFact,
}

impl ProviderEvent {
    /// The command id under which the event is recorded: `stripe:<event id>`.
    pub fn command_id(&self) -> String {
        format!("stripe:{}", self.event_id)
    }

    /// The idempotency key of the event: its command id, fingerprinted by the event id.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::new(self.command_id(), self.event_id.as_bytes())
    }
}

/// Whose intent an intent id is, as a lookup knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentOwner {
    Payment(PaymentId),
    /// The order whose payment it is (the payment id is read from the Order aggregate).
    Order(OrderId),
}

/// Finds our payment for a provider intent id.
///
/// Needed for provider objects that do not carry our metadata (Stripe charges and disputes only
/// name the PaymentIntent). Implementations: [`InMemoryPaymentLookup`] (tests, or a cache fed by
/// a feed consumer) and infrastructure's read-model lookup over the support projection's
/// `support_by_intent` index. Contract: `Ok(None)` means "not ours as far as we know"; an error
/// means "cannot tell right now" (the webhook then fails with 5xx and the provider retries).
/// A lookup may lag behind the event store; facts about our own intents normally carry our
/// metadata, so the lookup only serves later charge and dispute events.
#[async_trait]
pub trait PaymentLookup: Send + Sync + 'static {
    async fn owner_of_intent(&self, intent_id: &str) -> Result<Option<IntentOwner>, CommandError>;

    /// The owner of a charge, for charge and dispute events that name no intent (older API
    /// versions). Known once the success that names the charge is projected.
    async fn owner_of_charge(&self, charge_id: &str) -> Result<Option<IntentOwner>, CommandError>;
}

/// A map from intent id to owner, for tests and as a cache.
#[derive(Debug, Default)]
pub struct InMemoryPaymentLookup {
    owners: OwnerMap,
    charges: OwnerMap,
}

/// Owners by provider id (intent or charge).
#[derive(Debug, Default)]
struct OwnerMap(std::sync::RwLock<HashMap<String, IntentOwner>>);

impl OwnerMap {
    fn insert(&self, id: String, owner: IntentOwner) {
        // A plain map: a panic elsewhere cannot leave it in a state that matters.
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, owner);
    }

    fn get(&self, id: &str) -> Option<IntentOwner> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

impl InMemoryPaymentLookup {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, intent_id: impl Into<String>, owner: IntentOwner) {
        self.owners.insert(intent_id.into(), owner);
    }

    pub fn insert_charge(&self, charge_id: impl Into<String>, owner: IntentOwner) {
        self.charges.insert(charge_id.into(), owner);
    }
}

#[async_trait]
impl PaymentLookup for InMemoryPaymentLookup {
    async fn owner_of_intent(&self, intent_id: &str) -> Result<Option<IntentOwner>, CommandError> {
        Ok(self.owners.get(intent_id))
    }

    async fn owner_of_charge(&self, charge_id: &str) -> Result<Option<IntentOwner>, CommandError> {
        Ok(self.charges.get(charge_id))
    }
}

/// A lookup that knows nothing: every charge or dispute without our metadata is ignored.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPaymentLookup;

#[async_trait]
impl PaymentLookup for NoPaymentLookup {
    async fn owner_of_intent(&self, _intent_id: &str) -> Result<Option<IntentOwner>, CommandError> {
        Ok(None)
    }

    async fn owner_of_charge(&self, _charge_id: &str) -> Result<Option<IntentOwner>, CommandError> {
        Ok(None)
    }
}

/// Why an event was acknowledged without effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IgnoredReason {
    /// An event type we do not handle.
    UnknownType,
    /// The event is about a payment that is not ours (or not known yet).
    UnknownPayment,
}

impl IgnoredReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoredReason::UnknownType => "unknown_type",
            IgnoredReason::UnknownPayment => "unknown_payment",
        }
    }
}

/// What applying a provider event did. Every variant means "acknowledge it" (2xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// New payment events were committed, with the event id, in one commit.
    Applied {
        payment_id: String,
        status: String,
        version: u64,
    },
    /// The fact was already known: only the event id was recorded.
    NoChange { payment_id: String, status: String },
    /// The event id was recorded before: nothing was done (a redelivery, or the loser of two
    /// concurrent deliveries).
    Duplicate { payment_id: String, status: String },
    /// Acknowledged without effect.
    Ignored { reason: IgnoredReason },
    /// The Payment aggregate refused the fact for good (logged as an error); retrying would not
    /// change the answer, so it is acknowledged.
    Rejected {
        payment_id: String,
        code: String,
        message: String,
    },
}

impl WebhookOutcome {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            WebhookOutcome::Applied { .. } => "applied",
            WebhookOutcome::NoChange { .. } => "no_change",
            WebhookOutcome::Duplicate { .. } => "duplicate",
            WebhookOutcome::Ignored { reason } => reason.as_str(),
            WebhookOutcome::Rejected { .. } => "rejected",
        }
    }
}

/// What is remembered under `stripe:<event id>`, and returned on a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FactAck {
    payment_id: String,
    status: String,
    version: u64,
    events: usize,
}

/// What a support refund answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RefundReceiptSchema))]
pub struct RefundReceipt {
    pub order_id: String,
    pub payment_id: String,
    /// The provider's refund id; `None` when nothing was left to refund.
    pub refund_id: Option<String>,
    /// The amount of this refund.
    pub amount: Money,
    /// The provider's status: `succeeded` (recorded now), `pending` (recorded when the provider
    /// confirms it by webhook), or `nothing_to_refund`.
    pub status: String,
}

/// Payment facts from the provider, and support refunds.
pub struct Payments {
    shop: Arc<Shop>,
    gateway: Arc<dyn PaymentGateway>,
    lookup: Arc<dyn PaymentLookup>,
}

impl Payments {
    /// `gateway` must be the one `shop` uses.
    pub fn new(
        shop: Arc<Shop>,
        gateway: Arc<dyn PaymentGateway>,
        lookup: Arc<dyn PaymentLookup>,
    ) -> Self {
        Self {
            shop,
            gateway,
            lookup,
        }
    }

    /// Records one verified provider event on the payment it is about.
    ///
    /// `metadata` carries the request's correlation and request ids; the actor and command id
    /// are set here. See the module docs for the dedupe and error contracts.
    #[tracing::instrument(skip_all, fields(event_id = %event.event_id, event_type = %event.event_type, payment_id), err)]
    pub async fn apply(
        &self,
        event: &ProviderEvent,
        metadata: Metadata,
    ) -> Result<WebhookOutcome, CommandError> {
        if let ProviderFact::Ignored { event_type } = &event.fact {
            tracing::info!(%event_type, "provider event type not handled, ignored");
            return Ok(WebhookOutcome::Ignored {
                reason: IgnoredReason::UnknownType,
            });
        }
        let Some(payment_id) = self.resolve(&event.fact).await? else {
            tracing::warn!(
                intent_id = event.fact.intent_id().unwrap_or("-"),
                "provider event for a payment that is not ours, ignored"
            );
            return Ok(WebhookOutcome::Ignored {
                reason: IgnoredReason::UnknownPayment,
            });
        };
        tracing::Span::current().record("payment_id", payment_id.as_str());
        let ctx = CommandContext {
            metadata: Metadata {
                correlation_id: if metadata.correlation_id.is_empty() {
                    event.command_id()
                } else {
                    metadata.correlation_id
                },
                causation_id: metadata.causation_id,
                actor: Actor {
                    subject: "stripe".into(),
                    role: "provider".into(),
                },
                request_id: metadata.request_id,
                command_id: Some(event.command_id()),
                traceparent: metadata.traceparent,
            },
            idempotency: Some(event.idempotency_key()),
        };
        let svc = self.shop.service();
        let (id, ctx_ref) = (&payment_id, &ctx);
        let result = svc
            .run(ctx_ref, |mut attempt| async move {
                let mut current = attempt.load::<Payment>(id.as_str()).await?;
                if !current.state.exists() {
                    return Err(CommandError::not_found("payment", id.as_str()));
                }
                let commands = commands_for(&event.fact, &current.state, event.occurred_at)?;
                let before = current.version;
                for command in commands {
                    current = attempt.decide(current, command).await?;
                }
                let ack = FactAck {
                    payment_id: id.to_string(),
                    status: current.state.status.as_str().to_string(),
                    version: current.version,
                    events: (current.version - before) as usize,
                };
                Ok((attempt, ack))
            })
            .await;
        match result {
            Ok(Executed {
                value, replayed, ..
            }) => Ok(if replayed {
                WebhookOutcome::Duplicate {
                    payment_id: value.payment_id,
                    status: value.status,
                }
            } else if value.events > 0 {
                tracing::info!(status = %value.status, events = value.events, "provider fact recorded");
                WebhookOutcome::Applied {
                    payment_id: value.payment_id,
                    status: value.status,
                    version: value.version,
                }
            } else {
                WebhookOutcome::NoChange {
                    payment_id: value.payment_id,
                    status: value.status,
                }
            }),
            Err(CommandError::Rejected { code, message }) => {
                tracing::error!(code, %message, "provider fact refused by the payment");
                Ok(WebhookOutcome::Rejected {
                    payment_id: payment_id.to_string(),
                    code: code.to_string(),
                    message,
                })
            }
            Err(CommandError::Invalid { field, message }) => {
                tracing::error!(%field, %message, "provider fact is invalid");
                Ok(WebhookOutcome::Rejected {
                    payment_id: payment_id.to_string(),
                    code: "invalid".into(),
                    message: format!("invalid {field}: {message}"),
                })
            }
            Err(CommandError::NotFound { .. }) => Ok(WebhookOutcome::Ignored {
                reason: IgnoredReason::UnknownPayment,
            }),
            Err(other) => Err(other),
        }
    }

    /// Which of our payments a fact is about: `metadata.payment_id`, else the payment of
    /// `metadata.order_id`, else the lookup by intent id, else by charge id. `None` when it is
    /// not ours.
    async fn resolve(&self, fact: &ProviderFact) -> Result<Option<PaymentId>, CommandError> {
        let svc = self.shop.service();
        if let Some(refs) = fact.refs() {
            if let Some(pid) = refs
                .payment_id
                .as_deref()
                .and_then(|p| PaymentId::parse(p).ok())
            {
                if svc.load::<Payment>(pid.as_str()).await?.state.exists() {
                    return Ok(Some(pid));
                }
            }
            if let Some(oid) = refs
                .order_id
                .as_deref()
                .and_then(|o| OrderId::parse(o).ok())
            {
                if let Some(pid) = svc
                    .load::<Order>(oid.as_str())
                    .await?
                    .state
                    .payment_id
                    .clone()
                {
                    return Ok(Some(pid));
                }
            }
        }
        let mut owner = match fact.intent_id() {
            Some(intent_id) => self.lookup.owner_of_intent(intent_id).await?,
            None => None,
        };
        if owner.is_none() {
            if let Some(charge_id) = fact.charge_id() {
                owner = self.lookup.owner_of_charge(charge_id).await?;
            }
        }
        match owner {
            Some(IntentOwner::Payment(pid)) => Ok(Some(pid)),
            Some(IntentOwner::Order(oid)) => Ok(svc
                .load::<Order>(oid.as_str())
                .await?
                .state
                .payment_id
                .clone()),
            None => Ok(None),
        }
    }

    /// Refunds `amount` of an order's payment (everything still refundable when `None`) through
    /// the gateway, on behalf of support.
    ///
    /// `request_key` identifies the request (the HTTP `Idempotency-Key`, or a generated id): the
    /// provider refund key is derived from it, so a retried request refunds once. The refund is
    /// recorded when the provider confirms it: at once when the provider answers `succeeded`,
    /// otherwise by the `charge.refunded` webhook. Whichever comes second is a no-op, because
    /// the Payment aggregate records cumulative totals.
    ///
    /// `ctx.idempotency` is ignored: the receipt is remembered under
    /// `support-refund:<order id>:<request key>` (fingerprinted by the amount), so a repeated
    /// request gets the first receipt and the same key with another amount gets
    /// [`CommandError::IdempotencyMismatch`].
    #[tracing::instrument(skip_all, fields(order_id = %order_id), err)]
    pub async fn refund_order(
        &self,
        ctx: &CommandContext,
        order_id: &str,
        amount: Option<Money>,
        request_key: &str,
    ) -> Result<RefundReceipt, CommandError> {
        let request_key = request_key.trim();
        if request_key.is_empty() || request_key.len() > 200 {
            return Err(CommandError::invalid(
                "idempotency_key",
                "must be 1 to 200 characters",
            ));
        }
        let svc = self.shop.service();
        let command_id = format!("support-refund:{order_id}:{request_key}");
        let amount_key = amount
            .as_ref()
            .map(|a| format!("{}:{}", a.to_minor(), a.currency()))
            .unwrap_or_else(|| "all".into());
        let keyed = CommandContext {
            metadata: Metadata {
                command_id: Some(command_id.clone()),
                ..ctx.metadata.clone()
            },
            idempotency: Some(IdempotencyKey::new(
                command_id.clone(),
                format!("{order_id}|{amount_key}").as_bytes(),
            )),
        };
        // A repeated request gets the first receipt, even though less is refundable now.
        if let Some(replayed) = svc.replay::<RefundReceipt>(&keyed).await? {
            return Ok(replayed.value);
        }
        let order = svc.load::<Order>(order_id).await?;
        let Some(payment_id) = order.state.payment_id.clone() else {
            return Err(CommandError::not_found("order", order_id));
        };
        let payment = svc.load::<Payment>(payment_id.as_str()).await?;
        let p = &payment.state;
        let (true, Some(requested), Some(_)) = (
            p.status.is_captured(),
            p.amount.clone(),
            p.intent_id.as_ref(),
        ) else {
            return Err(CommandError::rejected(
                "not_captured",
                "the order's payment has not been captured",
            ));
        };
        let captured = p.captured.clone().unwrap_or(requested);
        let remaining = p
            .refundable(&captured)
            .map_err(|e| CommandError::Internal(e.to_string()))?;
        if let Some(a) = &amount {
            if a.currency() != captured.currency() {
                return Err(CommandError::invalid(
                    "amount",
                    format!("currency must be {}", captured.currency()),
                ));
            }
            if a.is_zero() {
                return Err(CommandError::invalid("amount", "must be greater than zero"));
            }
            let over = a
                .cmp_amount(&remaining)
                .map_err(|e| CommandError::Internal(e.to_string()))?
                == std::cmp::Ordering::Greater;
            if over {
                return Err(CommandError::rejected(
                    "refund_exceeds_paid",
                    format!("at most {remaining} can still be refunded"),
                ));
            }
        }
        // The provider key derives from the request key, so a retry after a crash anywhere below
        // refunds once; recording is a no-op when the webhook got there first.
        let unkeyed = CommandContext {
            metadata: keyed.metadata.clone(),
            idempotency: None,
        };
        let result: Option<RefundResult> = refund_and_record(
            &self.shop,
            &*self.gateway,
            &unkeyed,
            p,
            amount,
            &format!("support:{request_key}"),
        )
        .await?;
        let receipt = match result {
            Some(r) => RefundReceipt {
                order_id: order_id.to_string(),
                payment_id: payment_id.to_string(),
                refund_id: Some(r.refund_id),
                amount: r.amount,
                status: r.status,
            },
            None => RefundReceipt {
                order_id: order_id.to_string(),
                payment_id: payment_id.to_string(),
                refund_id: None,
                amount: Money::zero(captured.currency()),
                status: "nothing_to_refund".into(),
            },
        };
        // Remember the receipt under the request key (a concurrent twin gets the first one).
        Ok(svc.remember(&keyed, receipt).await?.value)
    }
}

/// Parses a provider currency code (Stripe sends lowercase).
fn currency(code: &str) -> Result<Currency, CommandError> {
    Currency::parse(&code.trim().to_ascii_uppercase())
        .map_err(|e| CommandError::invalid("currency", e.to_string()))
}

fn money(minor: i64, code: &str) -> Result<Money, CommandError> {
    Money::from_minor(minor, currency(code)?)
        .map_err(|e| CommandError::invalid("amount", e.to_string()))
}

/// The Payment commands a fact stands for, given the payment as it is now.
///
/// A refund reported for a payment that has no intent on record yet (the intent's own webhooks
/// were lost or are late) first records the success it implies, with the charge's intent, so
/// the refund is not lost.
pub fn commands_for(
    fact: &ProviderFact,
    payment: &Payment,
    at: DateTime<Utc>,
) -> Result<Vec<PaymentCommand>, CommandError> {
    Ok(match fact {
        ProviderFact::IntentSucceeded {
            intent_id,
            charge_id,
            amount_minor,
            currency,
            ..
        } => vec![PaymentCommand::RecordSucceeded {
            intent_id: intent_id.clone(),
            charge_id: charge_id.clone(),
            amount: money(*amount_minor, currency)?,
            at,
        }],
        ProviderFact::IntentFailed {
            intent_id, reason, ..
        } => vec![PaymentCommand::RecordFailed {
            intent_id: intent_id.clone(),
            reason: reason.clone(),
            at,
        }],
        ProviderFact::IntentCanceled { intent_id, .. } => vec![PaymentCommand::RecordCanceled {
            intent_id: intent_id.clone(),
            at,
        }],
        ProviderFact::IntentRequiresAction { intent_id, .. } => {
            vec![PaymentCommand::RecordRequiresAction {
                intent_id: intent_id.clone(),
            }]
        }
        ProviderFact::IntentProcessing { intent_id, .. } => {
            vec![PaymentCommand::RecordProcessing {
                intent_id: intent_id.clone(),
            }]
        }
        ProviderFact::ChargeRefunded {
            intent_id,
            charge_id,
            amount_refunded_minor,
            currency,
            refund_id,
            ..
        } => {
            let mut commands = Vec::with_capacity(2);
            if let (Some(intent_id), None, false) = (
                intent_id,
                payment.intent_id.as_ref(),
                payment.status.is_captured(),
            ) {
                if let Some(amount) = payment.amount.clone() {
                    commands.push(PaymentCommand::RecordSucceeded {
                        intent_id: intent_id.clone(),
                        charge_id: Some(charge_id.clone()),
                        amount,
                        at,
                    });
                }
            }
            commands.push(PaymentCommand::RecordRefunded {
                refund_id: refund_id.clone(),
                amount_refunded_total: money(*amount_refunded_minor, currency)?,
                at,
            });
            commands
        }
        ProviderFact::DisputeCreated(dispute) | ProviderFact::DisputeClosed(dispute) => {
            let Dispute {
                dispute_id,
                reason,
                status,
                amount_minor,
                currency,
                ..
            } = dispute;
            vec![PaymentCommand::RecordDisputed {
                dispute_id: dispute_id.clone(),
                reason: reason.clone(),
                status: status.clone(),
                amount: match (amount_minor, currency) {
                    (Some(minor), Some(currency)) => Some(money(*minor, currency)?),
                    _ => None,
                },
                at,
            }]
        }
        ProviderFact::Ignored { .. } => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::PaymentStatus;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn requested() -> Payment {
        let mut p = Payment::default();
        for e in p
            .decide(PaymentCommand::Request {
                payment_id: PaymentId::parse("pay_1").unwrap(),
                order_id: OrderId::parse("ord_1").unwrap(),
                amount: Money::parse("10.00", "EUR").unwrap(),
            })
            .unwrap()
        {
            p.evolve(&e);
        }
        p
    }

    fn refunded(total: i64) -> ProviderFact {
        ProviderFact::ChargeRefunded {
            intent_id: Some("pi_1".into()),
            charge_id: "ch_1".into(),
            amount_refunded_minor: total,
            currency: "eur".into(),
            refund_id: "re_1".into(),
            refs: PaymentRefs::default(),
        }
    }

    #[test]
    fn metadata_refs_are_trimmed_and_empty_ones_dropped() {
        let mut m = HashMap::new();
        m.insert("payment_id".to_string(), " pay_1 ".to_string());
        m.insert("order_id".to_string(), "".to_string());
        assert_eq!(
            PaymentRefs::from_metadata(&m),
            PaymentRefs {
                payment_id: Some("pay_1".into()),
                order_id: None
            }
        );
    }

    #[test]
    fn a_success_maps_minor_units_and_a_lowercase_currency_to_money() {
        let fact = ProviderFact::IntentSucceeded {
            intent_id: "pi_1".into(),
            charge_id: None,
            amount_minor: 1099,
            currency: "eur".into(),
            refs: PaymentRefs::default(),
        };
        assert_eq!(
            commands_for(&fact, &requested(), at()).unwrap(),
            vec![PaymentCommand::RecordSucceeded {
                intent_id: "pi_1".into(),
                charge_id: None,
                amount: Money::parse("10.99", "EUR").unwrap(),
                at: at(),
            }]
        );
    }

    #[test]
    fn an_unknown_currency_is_invalid() {
        let fact = ProviderFact::IntentSucceeded {
            intent_id: "pi_1".into(),
            charge_id: None,
            amount_minor: 1,
            currency: "xxx".into(),
            refs: PaymentRefs::default(),
        };
        assert!(matches!(
            commands_for(&fact, &requested(), at()),
            Err(CommandError::Invalid { .. })
        ));
    }

    #[test]
    fn a_refund_for_a_payment_without_intent_records_the_implied_success_first() {
        let cmds = commands_for(&refunded(400), &requested(), at()).unwrap();
        assert_eq!(cmds.len(), 2);
        assert!(matches!(cmds[0], PaymentCommand::RecordSucceeded { .. }));
        let mut p = requested();
        for c in cmds {
            for e in p.decide(c).unwrap() {
                p.evolve(&e);
            }
        }
        assert_eq!(p.status, PaymentStatus::PartiallyRefunded);
        assert_eq!(p.refunded, Some(Money::parse("4.00", "EUR").unwrap()));
    }

    #[test]
    fn a_refund_for_a_captured_payment_is_one_command() {
        let mut p = requested();
        for e in p
            .decide(PaymentCommand::RecordSucceeded {
                intent_id: "pi_1".into(),
                charge_id: None,
                amount: Money::parse("10.00", "EUR").unwrap(),
                at: at(),
            })
            .unwrap()
        {
            p.evolve(&e);
        }
        let cmds = commands_for(&refunded(1000), &p, at()).unwrap();
        assert_eq!(cmds.len(), 1);
    }

    #[test]
    fn disputes_map_to_record_disputed_with_their_status() {
        let fact = ProviderFact::DisputeClosed(Dispute {
            dispute_id: "dp_1".into(),
            intent_id: Some("pi_1".into()),
            charge_id: None,
            reason: "fraudulent".into(),
            status: "won".into(),
            amount_minor: Some(1000),
            currency: Some("eur".into()),
            refs: PaymentRefs::default(),
        });
        assert_eq!(
            commands_for(&fact, &requested(), at()).unwrap(),
            vec![PaymentCommand::RecordDisputed {
                dispute_id: "dp_1".into(),
                reason: "fraudulent".into(),
                status: "won".into(),
                amount: Some(Money::parse("10.00", "EUR").unwrap()),
                at: at(),
            }]
        );
        // A dispute fact is written as the flat object it always was, its tag beside its fields.
        let json = serde_json::to_value(&fact).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "fact": "dispute_closed", "dispute_id": "dp_1", "intent_id": "pi_1",
                "charge_id": null, "reason": "fraudulent", "status": "won",
                "amount_minor": 1000, "currency": "eur",
                "refs": serde_json::to_value(PaymentRefs::default()).unwrap(),
            })
        );
        assert_eq!(serde_json::from_value::<ProviderFact>(json).unwrap(), fact);
    }

    #[test]
    fn the_command_id_and_fingerprint_derive_from_the_event_id() {
        let e = ProviderEvent {
            event_id: "evt_1".into(),
            event_type: "x".into(),
            occurred_at: at(),
            livemode: false,
            fact: ProviderFact::Ignored {
                event_type: "x".into(),
            },
        };
        let k = e.idempotency_key();
        assert_eq!(k.command_id, "stripe:evt_1");
        assert_eq!(
            k.fingerprint,
            IdempotencyKey::new("other", b"evt_1").fingerprint
        );
    }

    #[tokio::test]
    async fn the_in_memory_lookup_answers_what_was_inserted() {
        let l = InMemoryPaymentLookup::new();
        l.insert(
            "pi_1",
            IntentOwner::Payment(PaymentId::parse("pay_1").unwrap()),
        );
        assert_eq!(
            l.owner_of_intent("pi_1").await.unwrap(),
            Some(IntentOwner::Payment(PaymentId::parse("pay_1").unwrap()))
        );
        assert_eq!(l.owner_of_intent("pi_2").await.unwrap(), None);
        assert_eq!(NoPaymentLookup.owner_of_intent("pi_1").await.unwrap(), None);
    }
}
