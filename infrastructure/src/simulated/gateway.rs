//! A payment gateway that behaves like Stripe test mode: no account, no network. Intents and
//! refunds are kept in memory and keyed by the idempotency key, so a retried request returns the
//! first answer, as Stripe's does. As a [`PaymentSimulator`] it also plays the storefront's part
//! (confirming with Stripe's test cards) and reports each outcome as the provider event Stripe's
//! webhook would deliver.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use commands::{
    CancelIntent, ConfirmIntent, CreateIntent, CreatedIntent, GatewayError, IntentStatus,
    PaymentGateway, PaymentRefs, PaymentSimulator, ProviderEvent, ProviderFact, RefundRequest,
    RefundResult, TestConfirmation,
};
use domain::Money;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// What confirming an intent with a test payment method does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOutcome {
    Succeeded,
    /// Declined, with Stripe's decline code.
    Failed {
        reason: String,
    },
    /// 3-D Secure: the intent needs action; confirming again succeeds.
    RequiresAction,
}

/// Stripe's test cards and payment methods, as the simulated gateway understands them.
pub fn outcome_for(payment_method: &str) -> Option<SimOutcome> {
    match payment_method {
        "pm_card_visa" | "4242424242424242" | "pm_card_mastercard" | "5555555555554444" => {
            Some(SimOutcome::Succeeded)
        }
        "pm_card_visa_chargeDeclined" | "pm_card_chargeDeclined" | "4000000000000002" => {
            Some(SimOutcome::Failed {
                reason: "card_declined".into(),
            })
        }
        "pm_card_chargeDeclinedInsufficientFunds" | "4000000000009995" => {
            Some(SimOutcome::Failed {
                reason: "insufficient_funds".into(),
            })
        }
        "pm_card_threeDSecure2Required" | "4000002760003184" | "4000000000003220" => {
            Some(SimOutcome::RequiresAction)
        }
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct SimIntent {
    intent_id: String,
    client_secret: String,
    amount: Money,
    status: String,
    refunded_minor: i64,
}

/// The simulated gateway. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct SimulatedGateway {
    intents: Mutex<HashMap<String, SimIntent>>,
    by_key: Mutex<HashMap<String, String>>,
    refunds: Mutex<HashMap<String, RefundResult>>,
}

fn digest(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..12])
}

/// An intent's client secret, derived from its id alone: the same after a restart, when the
/// in-memory intents are gone (the backbone never stores a secret, it asks again).
fn client_secret_of(intent_id: &str) -> String {
    format!("{intent_id}_secret_{}", digest(intent_id))
}

impl SimulatedGateway {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // Plain maps: a panic elsewhere cannot leave them half-updated in a way that matters.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Confirms an intent with a test payment method, as a storefront's Stripe.js would.
    /// Returns the outcome and the intent's amount.
    pub fn confirm(
        &self,
        intent_id: &str,
        payment_method: &str,
    ) -> Result<(SimOutcome, Money), GatewayError> {
        let outcome = outcome_for(payment_method).ok_or_else(|| {
            GatewayError::Rejected(format!("unknown test payment method {payment_method}"))
        })?;
        let mut intents = Self::lock(&self.intents);
        let intent = intents
            .get_mut(intent_id)
            .ok_or_else(|| GatewayError::Rejected(format!("no such payment intent {intent_id}")))?;
        if intent.status == "canceled" {
            return Err(GatewayError::Rejected(format!(
                "payment intent {intent_id} was canceled"
            )));
        }
        let outcome = match (&outcome, intent.status.as_str()) {
            (_, "succeeded") => SimOutcome::Succeeded,
            // The customer completed the challenge: the second confirmation succeeds.
            (SimOutcome::RequiresAction, "requires_action") => SimOutcome::Succeeded,
            _ => outcome,
        };
        intent.status = match &outcome {
            SimOutcome::Succeeded => "succeeded",
            SimOutcome::Failed { .. } => "requires_payment_method",
            SimOutcome::RequiresAction => "requires_action",
        }
        .to_string();
        Ok((outcome, intent.amount.clone()))
    }

    /// The intent's current status, for tests and the walkthrough.
    pub fn intent_status(&self, intent_id: &str) -> Option<String> {
        Self::lock(&self.intents)
            .get(intent_id)
            .map(|i| i.status.clone())
    }
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    async fn create_intent(&self, request: CreateIntent) -> Result<CreatedIntent, GatewayError> {
        let mut by_key = Self::lock(&self.by_key);
        let mut intents = Self::lock(&self.intents);
        if let Some(existing) = by_key
            .get(&request.idempotency_key)
            .and_then(|id| intents.get(id))
        {
            return Ok(CreatedIntent {
                intent_id: existing.intent_id.clone(),
                client_secret: existing.client_secret.clone(),
            });
        }
        let intent_id = format!("pi_sim_{}", digest(&request.idempotency_key));
        let client_secret = client_secret_of(&intent_id);
        intents.insert(
            intent_id.clone(),
            SimIntent {
                intent_id: intent_id.clone(),
                client_secret: client_secret.clone(),
                amount: request.amount,
                status: "requires_payment_method".into(),
                refunded_minor: 0,
            },
        );
        by_key.insert(request.idempotency_key, intent_id.clone());
        Ok(CreatedIntent {
            intent_id,
            client_secret,
        })
    }

    /// Derived from the id, so it answers after a restart too, when the intent is no longer in
    /// memory.
    async fn client_secret(&self, intent_id: &str) -> Result<String, GatewayError> {
        Ok(client_secret_of(intent_id))
    }

    /// Moves the intent as [`confirm`](Self::confirm) does; the outcome reaches the payment
    /// through [`PaymentSimulator::confirm_test_payment`], which the API uses instead.
    async fn confirm_intent(&self, request: ConfirmIntent) -> Result<IntentStatus, GatewayError> {
        self.confirm(&request.intent_id, &request.payment_method)?;
        let status = self
            .intent_status(&request.intent_id)
            .unwrap_or_else(|| "processing".into());
        Ok(IntentStatus {
            intent_id: request.intent_id,
            status,
        })
    }

    async fn cancel_intent(&self, request: CancelIntent) -> Result<IntentStatus, GatewayError> {
        let mut intents = Self::lock(&self.intents);
        let intent = intents.get_mut(&request.intent_id).ok_or_else(|| {
            GatewayError::Rejected(format!("no such payment intent {}", request.intent_id))
        })?;
        if intent.status == "succeeded" {
            return Err(GatewayError::Rejected(
                "a payment intent that succeeded cannot be canceled".into(),
            ));
        }
        intent.status = "canceled".into();
        Ok(IntentStatus {
            intent_id: request.intent_id,
            status: intent.status.clone(),
        })
    }

    async fn refund(&self, request: RefundRequest) -> Result<RefundResult, GatewayError> {
        let mut refunds = Self::lock(&self.refunds);
        if let Some(done) = refunds.get(&request.idempotency_key) {
            return Ok(done.clone());
        }
        let mut intents = Self::lock(&self.intents);
        let intent = intents.get_mut(&request.intent_id).ok_or_else(|| {
            GatewayError::Rejected(format!("no such payment intent {}", request.intent_id))
        })?;
        if intent.status != "succeeded" {
            return Err(GatewayError::Rejected(
                "payment intent has not succeeded".into(),
            ));
        }
        let minor = request.amount.to_minor();
        if intent.refunded_minor + minor > intent.amount.to_minor() {
            return Err(GatewayError::Rejected(
                "refund exceeds the captured amount".into(),
            ));
        }
        intent.refunded_minor += minor;
        let result = RefundResult {
            refund_id: format!("re_sim_{}", digest(&request.idempotency_key)),
            status: "succeeded".into(),
            amount: request.amount,
        };
        refunds.insert(request.idempotency_key, result.clone());
        Ok(result)
    }
}

#[async_trait]
impl PaymentSimulator for SimulatedGateway {
    fn knows_method(&self, payment_method: &str) -> bool {
        outcome_for(payment_method).is_some()
    }

    async fn confirm_test_payment(
        &self,
        request: TestConfirmation,
    ) -> Result<ProviderEvent, GatewayError> {
        let refs = PaymentRefs {
            payment_id: Some(request.intent.payment_id.to_string()),
            order_id: Some(request.intent.order_id.to_string()),
        };
        // Creating with the same key is idempotent and yields the same intent id: this
        // re-registers an intent lost in a restart and is a no-op otherwise.
        self.create_intent(request.intent).await?;
        let (outcome, amount) = self.confirm(&request.intent_id, &request.payment_method)?;
        Ok(provider_event(
            request.event_id,
            request.intent_id,
            &outcome,
            &amount,
            refs,
            request.at,
        ))
    }
}

/// The id of the charge that a simulated intent's success took the money with: the intent's
/// id with `ch_` for `pi_`.
pub fn charge_of(intent_id: &str) -> String {
    match intent_id.strip_prefix("pi_") {
        Some(rest) => format!("ch_{rest}"),
        None => format!("ch_{intent_id}"),
    }
}

/// What Stripe's webhook reports for a confirmation's outcome: the event type it sends and the
/// fact the Stripe adapter would parse from it.
fn provider_event(
    event_id: String,
    intent_id: String,
    outcome: &SimOutcome,
    amount: &Money,
    refs: PaymentRefs,
    at: DateTime<Utc>,
) -> ProviderEvent {
    let (event_type, fact) = match outcome {
        SimOutcome::Succeeded => (
            "payment_intent.succeeded",
            ProviderFact::IntentSucceeded {
                charge_id: Some(charge_of(&intent_id)),
                intent_id,
                amount_minor: amount.to_minor(),
                currency: amount.currency().code().to_ascii_lowercase(),
                refs,
            },
        ),
        SimOutcome::Failed { reason } => (
            "payment_intent.payment_failed",
            ProviderFact::IntentFailed {
                intent_id,
                reason: reason.clone(),
                refs,
            },
        ),
        SimOutcome::RequiresAction => (
            "payment_intent.requires_action",
            ProviderFact::IntentRequiresAction { intent_id, refs },
        ),
    };
    ProviderEvent {
        event_id,
        event_type: event_type.to_string(),
        // Stripe's event timestamps are whole seconds.
        occurred_at: at.trunc_subsecs(0),
        livemode: false,
        fact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Currency, OrderId, PaymentId};

    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn intent_req(key: &str) -> CreateIntent {
        CreateIntent {
            payment_id: PaymentId::parse("pay_1").unwrap(),
            order_id: OrderId::parse("ord_1").unwrap(),
            amount: eur(1000),
            idempotency_key: key.into(),
        }
    }

    #[tokio::test]
    async fn creating_an_intent_twice_with_one_key_returns_the_same_intent() {
        let g = SimulatedGateway::new();
        let a = g.create_intent(intent_req("pay_1")).await.unwrap();
        let b = g.create_intent(intent_req("pay_1")).await.unwrap();
        assert_eq!(a, b);
        let c = g.create_intent(intent_req("pay_2")).await.unwrap();
        assert_ne!(a.intent_id, c.intent_id);
    }

    #[tokio::test]
    async fn the_client_secret_is_the_one_created_even_after_a_restart() {
        let g = SimulatedGateway::new();
        let created = g.create_intent(intent_req("pay_1")).await.unwrap();
        assert_eq!(
            g.client_secret(&created.intent_id).await.unwrap(),
            created.client_secret
        );
        let restarted = SimulatedGateway::new();
        assert_eq!(
            restarted.client_secret(&created.intent_id).await.unwrap(),
            created.client_secret
        );
    }

    #[tokio::test]
    async fn test_cards_produce_success_decline_and_three_d_secure() {
        let g = SimulatedGateway::new();
        let a = g.create_intent(intent_req("k1")).await.unwrap();
        assert_eq!(
            g.confirm(&a.intent_id, "4000000000000002").unwrap().0,
            SimOutcome::Failed {
                reason: "card_declined".into()
            }
        );
        assert_eq!(
            g.confirm(&a.intent_id, "pm_card_threeDSecure2Required")
                .unwrap()
                .0,
            SimOutcome::RequiresAction
        );
        assert_eq!(
            g.confirm(&a.intent_id, "pm_card_threeDSecure2Required")
                .unwrap()
                .0,
            SimOutcome::Succeeded
        );
        assert_eq!(g.intent_status(&a.intent_id).as_deref(), Some("succeeded"));
        assert!(g.confirm(&a.intent_id, "pm_card_bogus").is_err());
    }

    fn confirmation(method: &str, event_id: &str) -> TestConfirmation {
        let intent = intent_req("pay_1");
        TestConfirmation {
            intent_id: format!("pi_sim_{}", digest(&intent.idempotency_key)),
            intent,
            payment_method: method.into(),
            event_id: event_id.into(),
            at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[tokio::test]
    async fn a_test_confirmation_reports_what_stripes_webhook_would() {
        let g = SimulatedGateway::new();
        assert!(g.knows_method("pm_card_visa") && !g.knows_method("pm_card_bogus"));
        let refs = PaymentRefs {
            payment_id: Some("pay_1".into()),
            order_id: Some("ord_1".into()),
        };
        // The intent was created before a restart: confirming registers it again.
        let declined = g
            .confirm_test_payment(confirmation("4000000000000002", "evt_1"))
            .await
            .unwrap();
        assert_eq!(declined.event_id, "evt_1");
        assert_eq!(declined.event_type, "payment_intent.payment_failed");
        assert_eq!(
            declined.occurred_at.to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        assert!(!declined.livemode);
        let intent_id = confirmation("", "").intent_id;
        assert_eq!(
            declined.fact,
            ProviderFact::IntentFailed {
                intent_id: intent_id.clone(),
                reason: "card_declined".into(),
                refs: refs.clone(),
            }
        );
        let challenged = g
            .confirm_test_payment(confirmation("pm_card_threeDSecure2Required", "evt_2"))
            .await
            .unwrap();
        assert_eq!(challenged.event_type, "payment_intent.requires_action");
        let paid = g
            .confirm_test_payment(confirmation("pm_card_threeDSecure2Required", "evt_3"))
            .await
            .unwrap();
        assert_eq!(paid.event_type, "payment_intent.succeeded");
        assert_eq!(
            paid.fact,
            ProviderFact::IntentSucceeded {
                charge_id: Some(charge_of(&intent_id)),
                intent_id,
                amount_minor: 1000,
                currency: "eur".into(),
                refs,
            }
        );
        assert!(g
            .confirm_test_payment(confirmation("pm_card_bogus", "evt_4"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn refunds_are_idempotent_and_bounded_by_the_capture() {
        let g = SimulatedGateway::new();
        let a = g.create_intent(intent_req("k1")).await.unwrap();
        let req = |key: &str, minor| RefundRequest {
            payment_id: PaymentId::parse("pay_1").unwrap(),
            order_id: OrderId::parse("ord_1").unwrap(),
            intent_id: a.intent_id.clone(),
            amount: eur(minor),
            idempotency_key: key.into(),
        };
        assert!(g.refund(req("r1", 400)).await.is_err(), "not captured yet");
        g.confirm(&a.intent_id, "pm_card_visa").unwrap();
        let r1 = g.refund(req("r1", 400)).await.unwrap();
        assert_eq!(g.refund(req("r1", 400)).await.unwrap(), r1);
        g.refund(req("r2", 600)).await.unwrap();
        assert!(g.refund(req("r3", 1)).await.is_err(), "over-refund refused");
    }
}
