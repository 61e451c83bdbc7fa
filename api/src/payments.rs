//! Simulated card payments: what Stripe.js plus Stripe's webhook would do, in one request.
//! The simulated provider ([`commands::PaymentSimulator`]) confirms the intent and reports the
//! outcome as the provider event its webhook would deliver; that event is applied like a
//! verified Stripe webhook.

use crate::error::ApiError;
use crate::state::AppState;
use axum::http::StatusCode;
use commands::{
    Ack, Caller, CommandContext, CreateIntent, Executed, TestConfirmation, WebhookOutcome,
};
use domain::{Payment, PaymentId};

/// Confirms `payment_id` with a test payment method on behalf of the customer who owns its
/// order, and records the provider's answer on the payment. The process managers then move the
/// order (paid, or payment failed).
///
/// A replayed request (same `Idempotency-Key` and body) returns the first answer without
/// touching the gateway again.
pub async fn confirm_simulated(
    state: &AppState,
    ctx: &CommandContext,
    caller: &Caller,
    payment_id: &PaymentId,
    payment_method: &str,
) -> Result<Executed<Ack>, ApiError> {
    let Some(simulator) = &state.simulator else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_simulated",
            "payments are confirmed with Stripe when a Stripe key is configured",
        ));
    };
    let svc = state.shop.service();
    if let Some(replayed) = svc.replay::<Ack>(ctx).await? {
        let version = svc.load::<Payment>(payment_id.as_str()).await?.version;
        return Ok(names_the_payment(replayed, payment_id, version, state));
    }
    let payment = svc.load::<Payment>(payment_id.as_str()).await?;
    let (Some(order_id), Some(amount)) =
        (payment.state.order_id.clone(), payment.state.amount.clone())
    else {
        return Err(ApiError::not_found("payment"));
    };
    // Only the order's customer (or staff) may pay; anyone else learns nothing.
    state
        .shop
        .get_order_state(caller, order_id.as_str())
        .await
        .map_err(|_| ApiError::not_found("payment"))?;
    // Checked once the payment is known to be the caller's: a missing payment is 404 whatever
    // the method.
    if !simulator.knows_method(payment_method) {
        return Err(ApiError::validation(
            "payment_method",
            "unknown test payment method (try pm_card_visa or 4000000000000002)",
        ));
    }
    let intent = state.shop.ensure_intent(ctx, payment_id.as_str()).await?;
    // The provider event's id is derived from the request, so a retried request is a duplicate
    // delivery (one effect), and each distinct confirmation is a new event.
    let event_seed = match &ctx.idempotency {
        Some(key) => key.command_id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let event_id = format!(
        "evt_sim_{}",
        &commands::IdempotencyKey::new(&event_seed, event_seed.as_bytes()).fingerprint[..24]
    );
    let event = simulator
        .confirm_test_payment(TestConfirmation {
            intent: CreateIntent {
                payment_id: payment_id.clone(),
                order_id,
                amount,
                idempotency_key: payment_id.to_string(),
            },
            intent_id: intent.intent_id,
            payment_method: payment_method.to_string(),
            event_id,
            at: state.clock.now(),
        })
        .await
        .map_err(commands::CommandError::from)?;
    let delivered = state.webhooks.apply(&event, ctx.metadata.clone()).await?;
    let (status, replayed) = match &delivered {
        WebhookOutcome::Applied { status, .. } | WebhookOutcome::NoChange { status, .. } => {
            (status.clone(), false)
        }
        WebhookOutcome::Duplicate { status, .. } => (status.clone(), true),
        WebhookOutcome::Rejected { code, message, .. } => {
            return Err(ApiError::from(commands::CommandError::rejected(
                "payment_rejected",
                format!("{code}: {message}"),
            )))
        }
        WebhookOutcome::Ignored { .. } => {
            return Err(ApiError::from(commands::CommandError::Internal(
                "simulated payment event was ignored".into(),
            )))
        }
    };
    let version = svc.load::<Payment>(payment_id.as_str()).await?.version;
    let ack = Ack {
        id: payment_id.to_string(),
        version,
        status,
    };
    // Remember the answer under the request's Idempotency-Key too, so a retry gets this exact
    // response (the payment events above are already deduplicated by the Stripe event id).
    let mut executed = svc.remember(ctx, ack).await?;
    executed.replayed |= replayed;
    Ok(names_the_payment(executed, payment_id, version, state))
}

/// Read-your-writes: the answer's commit (the remembered answer, if any) wrote no stream, but
/// the payment's own commit did; the answer's consistency token names the payment at `version`.
fn names_the_payment(
    mut executed: Executed<Ack>,
    payment_id: &PaymentId,
    version: u64,
    state: &AppState,
) -> Executed<Ack> {
    let commit = executed
        .commit
        .get_or_insert_with(|| commands::CommitResult {
            position: None,
            streams: Vec::new(),
            committed_at: state.clock.now(),
        });
    if commit.streams.is_empty() && version > 0 {
        commit.streams.push(commands::StreamVersion {
            stream: commands::StreamRef::new(domain::StreamType::Payment, payment_id.as_str()),
            version,
        });
    }
    executed
}
