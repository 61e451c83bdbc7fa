//! The Stripe webhook endpoint's logic, and the one place provider events are applied.
//!
//! Real Stripe's outcomes enter through [`StripeWebhooks::receive`]: signature first, then typed
//! or lenient parsing. The simulated provider's outcomes need neither (they are produced in this
//! process, see [`crate::payments`]) and enter through [`StripeWebhooks::apply`]. Both end in
//! `commands::Payments::apply`, which records the provider event id in the same commit as the
//! payment events it causes.

use crate::error::ApiError;
use axum::http::StatusCode;
use commands::{Clock, Metadata, Payments, ProviderEvent, WebhookOutcome};
use infrastructure::stripe::webhook::{WebhookError, WebhookVerifier};
use std::sync::Arc;

/// Verifies, parses and applies provider webhooks.
pub struct StripeWebhooks {
    verifier: WebhookVerifier,
    payments: Arc<Payments>,
    clock: Arc<dyn Clock>,
}

impl StripeWebhooks {
    pub fn new(verifier: WebhookVerifier, payments: Arc<Payments>, clock: Arc<dyn Clock>) -> Self {
        Self {
            verifier,
            payments,
            clock,
        }
    }

    pub fn payments(&self) -> &Arc<Payments> {
        &self.payments
    }

    /// Handles one delivery: 2xx only after the commit; a bad signature is a 400 that changes
    /// nothing; a failure to commit is a 5xx so that Stripe retries.
    #[tracing::instrument(skip_all)]
    pub async fn receive(
        &self,
        signature: Option<&str>,
        body: &[u8],
        metadata: Metadata,
    ) -> Result<WebhookOutcome, ApiError> {
        let event = match self
            .verifier
            .verify_and_parse(signature, body, self.clock.now())
        {
            Ok(event) => event,
            Err(err) => {
                metrics::counter!("backbone_webhook_events_total", "outcome" => "refused")
                    .increment(1);
                return Err(refusal(&err));
            }
        };
        self.apply(&event.into(), metadata).await
    }

    /// Applies a provider event that needs no verification, because this process produced it
    /// (the simulated provider), or verified it ([`Self::receive`]).
    #[tracing::instrument(skip_all, fields(event_id = %event.event_id, outcome))]
    pub async fn apply(
        &self,
        event: &ProviderEvent,
        metadata: Metadata,
    ) -> Result<WebhookOutcome, ApiError> {
        let result = self.payments.apply(event, metadata).await;
        let label = match &result {
            Ok(outcome) => outcome.label(),
            Err(_) => "failed",
        };
        tracing::Span::current().record("outcome", label);
        metrics::counter!("backbone_webhook_events_total", "outcome" => label).increment(1);
        Ok(result?)
    }
}

fn refusal(err: &WebhookError) -> ApiError {
    let code = match err {
        WebhookError::MissingHeader => "missing_signature",
        WebhookError::StaleTimestamp { .. } => "stale_signature",
        WebhookError::Unparseable(_) => "unparseable_event",
        _ => "invalid_signature",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, err.to_string())
}
