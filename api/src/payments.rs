//! Simulated card payments for the embedded default: what Stripe.js plus Stripe's webhook would
//! do, in one function, so that a later change can route it through the signed webhook path.

use crate::error::ApiError;
use crate::state::AppState;
use commands::{Ack, Caller, CommandContext, CreateIntent, Executed, PaymentGateway};
use domain::{Payment, PaymentCommand, PaymentId};
use infrastructure::payments::simulated::{outcome_for, SimOutcome};

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
    if outcome_for(payment_method).is_none() {
        return Err(ApiError::validation(
            "payment_method",
            "unknown test payment method (try pm_card_visa or 4000000000000002)",
        ));
    }
    let svc = state.shop.service();
    if let Some(replayed) = svc.replay::<Ack>(ctx).await? {
        return Ok(replayed);
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
    let intent = state.shop.ensure_intent(ctx, payment_id.as_str()).await?;
    // The simulated gateway keeps intents in memory; creating with the same key (the payment id)
    // is idempotent and yields the same intent id, so this re-registers an intent lost in a
    // restart and is a no-op otherwise.
    state
        .payments
        .create_intent(CreateIntent {
            payment_id: payment_id.clone(),
            order_id,
            amount,
            idempotency_key: payment_id.to_string(),
        })
        .await
        .map_err(commands::CommandError::from)?;
    let (outcome, captured) = state
        .payments
        .confirm(&intent.intent_id, payment_method)
        .map_err(commands::CommandError::from)?;
    let at = state.clock.now();
    let intent_id = intent.intent_id;
    let executed = state
        .shop
        .payment_fact(ctx, payment_id.as_str(), |_| match &outcome {
            SimOutcome::Succeeded => PaymentCommand::RecordSucceeded {
                intent_id: intent_id.clone(),
                amount: captured.clone(),
                at,
            },
            SimOutcome::Failed { reason } => PaymentCommand::RecordFailed {
                intent_id: intent_id.clone(),
                reason: reason.clone(),
                at,
            },
            SimOutcome::RequiresAction => PaymentCommand::RecordRequiresAction {
                intent_id: intent_id.clone(),
            },
        })
        .await?;
    Ok(executed)
}
