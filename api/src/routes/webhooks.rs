//! `POST /v1/webhooks/stripe`: no bearer token; the `Stripe-Signature` over the raw body is the
//! authentication.

use crate::error::ApiResult;
use crate::extract::RequestIds;
use crate::schema::WebhookErrors;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use commands::{Actor, Metadata, WebhookOutcome};
use infrastructure::stripe::webhook::SIGNATURE_HEADER;

#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "webhooks",
    request_body(content = String, description = "the raw Stripe event, signed", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=… over the raw body")),
    description = "400: a missing, malformed, stale or wrong signature (nothing changed); 5xx: not \
        recorded, Stripe retries.",
    responses((status = 200, description = "recorded (or a known duplicate, or an ignored type)", body = commands::WebhookOutcome),
        WebhookErrors),
    security(()))]
pub async fn stripe(
    State(state): State<AppState>,
    ids: RequestIds,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookOutcome>> {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let metadata = Metadata {
        correlation_id: ids.correlation_id,
        causation_id: None,
        actor: Actor {
            subject: "stripe".into(),
            role: "webhook".into(),
        },
        request_id: Some(ids.request_id),
        command_id: None,
        traceparent: Some(ids.trace.to_string()),
    };
    let outcome = state.webhooks.receive(signature, &body, metadata).await?;
    Ok(Json(outcome))
}
