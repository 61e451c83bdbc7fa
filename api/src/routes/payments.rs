//! Paying (customers): the intent's client secret, asked of the provider, and confirming a
//! payment, passed on to Stripe or answered by the simulated provider.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, Cmd};
use crate::http::CommandReply;
use crate::payments::confirm_simulated;
use crate::schema::{AckReply, CommandErrors, IdempotencyHeader, PaymentPath, PaymentReadErrors};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use commands::Ack;
use domain::PaymentId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// With Stripe: a PaymentMethod id (`pm_…`), passed on to Stripe, whose webhook then moves
    /// the payment. Simulated: a test method or card number, `pm_card_visa`,
    /// `4242424242424242` (success), `4000000000000002` (declined),
    /// `pm_card_threeDSecure2Required` (3-D Secure).
    #[schema(
        example = "pm_card_visa",
        min_length = 1,
        max_length = 255,
        pattern = "\\S"
    )]
    pub payment_method: String,
}

#[utoipa::path(post, path = "/v1/payments/{payment_id}/confirm", tag = "payments",
    description = "With the simulated provider, 400 for a `payment_method` it does not know.",
    params(PaymentPath, IdempotencyHeader),
    request_body = ConfirmRequest,
    responses((status = 200, description = "the payment's new status", body = AckReply), CommandErrors))]
pub async fn confirm(
    State(state): State<AppState>,
    AppPath(payment_id): AppPath<PaymentId>,
    cmd: Cmd<ConfirmRequest>,
) -> ApiResult<CommandReply<Ack>> {
    let method = cmd.body.payment_method.trim();
    let executed = if state.simulator.is_some() {
        confirm_simulated(&state, &cmd.ctx, &cmd.caller(), &payment_id, method).await?
    } else {
        if method.is_empty() {
            return Err(ApiError::validation("payment_method", "must not be empty"));
        }
        // A real provider: the method is only passed on; its webhook moves the payment.
        state
            .shop
            .confirm_payment(&cmd.ctx, &cmd.caller(), payment_id.as_str(), method)
            .await?
    };
    Ok(CommandReply::ok(executed))
}

/// What the storefront confirms with (Stripe.js): the payment's intent and its client secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientSecretResponse {
    pub payment_id: String,
    pub intent_id: String,
    /// Asked of the payment provider on every request: the backbone never stores it.
    pub client_secret: String,
}

#[utoipa::path(get, path = "/v1/payments/{payment_id}/client-secret", tag = "payments",
    description = "409 `intent_pending`: the provider has no intent for it yet (retry later); 409 \
        `payment_rejected`: the provider refused; 503 `payment_provider_unavailable`.",
    params(PaymentPath),
    responses((status = 200, description = "the intent's client secret, fetched from the payment provider (never stored); not cacheable", body = ClientSecretResponse),
        PaymentReadErrors))]
pub async fn client_secret(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(payment_id): AppPath<PaymentId>,
) -> ApiResult<impl IntoResponse> {
    let intent = state
        .shop
        .client_secret(&principal.caller(), payment_id.as_str())
        .await?;
    let body = ClientSecretResponse {
        payment_id: intent.payment_id,
        intent_id: intent.intent_id,
        client_secret: intent.client_secret,
    };
    // A secret: no shared cache may keep it.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)))
}
