//! Ports the command service and the workers need besides the event store: the clock, the
//! payment gateway and the mail channel.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Money, OrderId, PaymentId};
use serde::{Deserialize, Serialize};

/// Where "now" comes from, so tests can pin time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock tests can set and advance.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(std::sync::Mutex::new(at))
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A payment intent to create at the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateIntent {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: Money,
    /// Sent as the provider's idempotency key: the payment id, so a retry never creates two.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedIntent {
    pub intent_id: String,
    /// Handed to the storefront, never stored: see [`PaymentGateway::client_secret`].
    pub client_secret: String,
}

/// A refund to request at the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub intent_id: String,
    pub amount: Money,
    /// Deterministic per refund request, so a retried request refunds once.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundResult {
    pub refund_id: String,
    /// The provider's status ("succeeded", "pending", ...).
    pub status: String,
    pub amount: Money,
}

/// A payment method passed on to the provider to confirm an intent, as the storefront's
/// Stripe.js would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmIntent {
    pub intent_id: String,
    pub payment_method: String,
    /// Deterministic per confirmation request, so a retried request confirms once.
    pub idempotency_key: String,
}

/// Cancels an intent that was never paid (its order expired), so it can no longer be paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelIntent {
    pub intent_id: String,
    /// Deterministic per cancellation, so a retried step cancels once.
    pub idempotency_key: String,
}

/// The provider's answer to a confirmation or a cancellation: the intent's status
/// ("succeeded", "processing", "requires_action", "canceled", ...). A confirmation records
/// nothing: the payment moves on the provider's webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentStatus {
    pub intent_id: String,
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Network errors, 5xx and 429: worth retrying later.
    #[error("payment provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request; retrying will not help.
    #[error("payment provider rejected the request: {0}")]
    Rejected(String),
}

impl GatewayError {
    pub fn is_transient(&self) -> bool {
        matches!(self, GatewayError::Transient(_))
    }
}

/// The payment provider port (Stripe, or the simulated gateway of the embedded default).
///
/// Contract: `create_intent` with the same idempotency key returns the same intent; `refund` with
/// the same idempotency key refunds once; `confirm_intent` with the same key confirms once;
/// `cancel_intent` answers `canceled` for an intent that is canceled (again, or already), and
/// `Rejected` for one that can no longer be canceled (it succeeded). `client_secret` answers the
/// secret of an intent the provider created, the same one `create_intent` gave, at any later
/// time (a restart included): the backbone never stores a client secret, so this is where it
/// comes from again.
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    async fn create_intent(&self, request: CreateIntent) -> Result<CreatedIntent, GatewayError>;
    async fn client_secret(&self, intent_id: &str) -> Result<String, GatewayError>;
    async fn confirm_intent(&self, request: ConfirmIntent) -> Result<IntentStatus, GatewayError>;
    async fn refund(&self, request: RefundRequest) -> Result<RefundResult, GatewayError>;
    async fn cancel_intent(&self, request: CancelIntent) -> Result<IntentStatus, GatewayError>;
}

/// A confirmation the backbone performs itself, as a storefront's Stripe.js would with a test
/// payment method.
#[derive(Debug, Clone, PartialEq)]
pub struct TestConfirmation {
    /// The intent as checkout created it. A simulator that lost it (it keeps intents in memory,
    /// and the process restarted) creates it again under the same idempotency key.
    pub intent: CreateIntent,
    pub intent_id: String,
    /// A test payment method or card number, for example `pm_card_visa` or `4000000000000002`.
    pub payment_method: String,
    /// The id of the provider event that reports the outcome. Deterministic per request, so a
    /// retried request is a duplicate delivery (one effect).
    pub event_id: String,
    /// When the outcome happened.
    pub at: DateTime<Utc>,
}

/// A payment provider the backbone can drive itself: the simulated gateway, where no storefront
/// talks to a real provider. Real providers do not implement it.
///
/// Contract: `knows_method` is true exactly for the payment methods `confirm_test_payment`
/// accepts. `confirm_test_payment` answers with the provider event its webhook would deliver
/// (for [`Payments::apply`](crate::Payments::apply)); it never applies anything itself.
#[async_trait]
pub trait PaymentSimulator: Send + Sync + 'static {
    fn knows_method(&self, payment_method: &str) -> bool;
    async fn confirm_test_payment(
        &self,
        request: TestConfirmation,
    ) -> Result<crate::ProviderEvent, GatewayError>;
}

/// Durable positions for feed consumers that are not projections (process managers).
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    async fn get(&self, name: &str) -> Result<crate::FeedCursor, crate::StoreError>;
    async fn set(&self, name: &str, cursor: &crate::FeedCursor) -> Result<(), crate::StoreError>;
}

/// One message to a customer, ready to send: the delivery worker renders it, a [`Mailer`]
/// encodes it (one RFC 5322 message with a plain-text and an HTML part) and sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// The notification's id. A channel derives the message's `Message-ID` from it alone, so
    /// that a retry after a crash sends the same message again, never a second distinct one.
    pub notification_id: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Why a channel did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MailError {
    pub reason: String,
    /// No retry can fix it (a malformed or refused address): the notification fails at once.
    pub permanent: bool,
}

impl MailError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            permanent: false,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// A delivery channel for customer messages: files, SMTP or SES.
///
/// Contract: `send` returns once the channel has taken the message (written, or accepted by
/// the server), with the provider's id for it if it gives one. Sending the same
/// [`OutgoingEmail`] twice gives the same `Message-ID` header both times.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// The channel's name as recorded in delivery events (`file`, `smtp`, `ses`).
    fn channel(&self) -> &'static str;
    async fn send(&self, email: &OutgoingEmail) -> Result<Option<String>, MailError>;
}
