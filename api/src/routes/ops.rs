//! Operations endpoints (no auth): liveness, readiness and metrics (the OpenAPI document is
//! served by [`crate::openapi`]).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is serving")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "every worker is healthy and has caught up"),
        (status = 503, description = "not ready yet, with the worker statuses")))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    crate::ops::readiness(&state.health)
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::ops::exposition(
        crate::metrics::render(&state.metrics, Some(state.store.as_ref()), &state.health).await,
    )
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}
