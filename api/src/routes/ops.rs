//! Operations endpoints (no auth): liveness, readiness and metrics (the OpenAPI document is
//! served by [`crate::openapi`]).

use crate::error::ApiError;
use crate::schema::QueryErrors;
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What `/healthz` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// What `/readyz` answers (`ops::readiness`), ready or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each worker's health, by name.
    pub workers: BTreeMap<String, workers::WorkerStatus>,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is serving", body = Liveness), QueryErrors),
    security(()))]
pub async fn healthz() -> impl IntoResponse {
    Json(Liveness { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "every worker is healthy and has caught up", body = Readiness),
        (status = 503, description = "not ready yet, with the worker statuses", body = Readiness),
        QueryErrors),
    security(()))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    crate::ops::readiness(&state.health)
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        QueryErrors),
    security(()))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::ops::exposition(
        crate::metrics::render(&state.metrics, Some(state.store.as_ref()), &state.health).await,
    )
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}
