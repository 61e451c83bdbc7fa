//! The Stripe webhook endpoint's logic, and the simulated provider's delivery through it.
//!
//! Every provider outcome (real Stripe, or the simulated gateway of the embedded default) enters
//! through [`StripeWebhooks::receive`]: signature first, then typed or lenient parsing, then
//! `commands::Payments::apply`, which records the Stripe event id in the same commit as the
//! payment events it causes.

use crate::error::ApiError;
use axum::http::StatusCode;
use commands::{Clock, Metadata, Payments, WebhookOutcome};
use infrastructure::stripe::testing::{payment_intent_event, IntentSpec};
use infrastructure::stripe::webhook::{sign_for_test, WebhookError, WebhookVerifier};
use std::sync::Arc;

/// The simulated provider's signing secret: its webhooks go through the same verifier.
#[derive(Clone)]
pub struct SimulatedSigner {
    secret: String,
}

impl SimulatedSigner {
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
        }
    }
}

/// What a simulated card confirmation reports, as Stripe would in a webhook.
pub struct SimulatedIntentEvent<'a> {
    /// Deterministic per confirmation request, so a retried request is a duplicate delivery.
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub intent: IntentSpec<'a>,
    pub failure: Option<&'a str>,
}

/// Verifies, parses and applies provider webhooks.
pub struct StripeWebhooks {
    verifier: WebhookVerifier,
    payments: Arc<Payments>,
    clock: Arc<dyn Clock>,
    simulated: Option<SimulatedSigner>,
}

impl StripeWebhooks {
    /// `simulated` is the embedded default's provider signer (`None` with real Stripe).
    pub fn new(
        verifier: WebhookVerifier,
        payments: Arc<Payments>,
        clock: Arc<dyn Clock>,
        simulated: Option<SimulatedSigner>,
    ) -> Self {
        Self {
            verifier,
            payments,
            clock,
            simulated,
        }
    }

    pub fn payments(&self) -> &Arc<Payments> {
        &self.payments
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated.is_some()
    }

    /// Handles one delivery: 2xx only after the commit; a bad signature is a 400 that changes
    /// nothing; a failure to commit is a 5xx so that Stripe retries.
    #[tracing::instrument(skip_all, fields(outcome))]
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
        let result = self.payments.apply(&event.into(), metadata).await;
        let label = match &result {
            Ok(outcome) => outcome.label(),
            Err(_) => "failed",
        };
        tracing::Span::current().record("outcome", label);
        metrics::counter!("backbone_webhook_events_total", "outcome" => label).increment(1);
        Ok(result?)
    }

    /// Delivers a simulated provider event through [`Self::receive`], signed with the simulated
    /// provider's secret. Fails when a real provider is configured.
    pub async fn deliver_simulated(
        &self,
        event: SimulatedIntentEvent<'_>,
        metadata: Metadata,
    ) -> Result<WebhookOutcome, ApiError> {
        let Some(signer) = &self.simulated else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_simulated",
                "payments are confirmed with Stripe when a Stripe key is configured",
            ));
        };
        let now = self.clock.now().timestamp();
        let body = payment_intent_event(
            event.event_id,
            event.event_type,
            &event.intent,
            now,
            event.failure,
        );
        let header = sign_for_test(&signer.secret, now, &body);
        self.receive(Some(&header), &body, metadata).await
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

/// A webhook endpoint for a process whose provider is the simulated gateway, with a random
/// per-process signing secret (the AWS backend's demo mode).
pub fn simulated_only(
    shop: Arc<commands::Shop>,
    gateway: Arc<dyn commands::PaymentGateway>,
    models: Arc<dyn projections::ReadModelStore>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<StripeWebhooks> {
    let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
    let lookup = Arc::new(infrastructure::stripe::lookup::ReadModelPaymentLookup::new(
        models,
    ));
    let payments = Arc::new(Payments::new(shop, gateway, lookup));
    let verifier = WebhookVerifier::new([secret.clone()])
        .map_err(|e| anyhow::anyhow!("configuring the webhook secret: {e}"))?;
    Ok(StripeWebhooks::new(
        verifier,
        payments,
        clock,
        Some(SimulatedSigner::new(secret)),
    ))
}
