//! The operations listener (`--ops-listen`): `/healthz`, `/readyz` and `/metrics` on an address
//! of their own. `relay` and `worker` serve nothing else; `serve` moves `/metrics` there, off
//! the listener a load balancer exposes.
//!
//! `/readyz` answers 503 while a worker is unhealthy (its last step failed), has not caught up
//! once, or is stalled: a step has run longer than the stall limit, stuck with work in hand.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use workers::{CancellationToken, Health};

/// `/readyz` over `health`.
pub fn readiness(health: &Health) -> Response {
    let ready = health.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "workers": health.snapshot(),
    });
    (status, Json(body)).into_response()
}

/// A Prometheus exposition answer.
pub fn exposition(text: String) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// What a relay or worker process serves its operations endpoints from.
#[derive(Clone)]
struct Process {
    health: Health,
    metrics: PrometheusHandle,
}

/// The operations endpoints of a process without an API (`relay`, `worker`).
pub fn process_router(health: Health, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(crate::routes::ops::healthz))
        .route(
            "/readyz",
            get(|State(p): State<Process>| async move { readiness(&p.health) }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Process>| async move {
                exposition(crate::metrics::render(&p.metrics, None, &p.health).await)
            }),
        )
        .with_state(Process { health, metrics })
}

/// The operations endpoints of `serve`, over its state.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(crate::routes::ops::healthz))
        .route("/readyz", get(crate::routes::ops::readyz))
        .route("/metrics", get(crate::routes::ops::metrics))
        .with_state(state)
}

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "ops endpoints listening"),
        Err(err) => tracing::warn!(error = %err, "ops listener has no address"),
    }
    let stopped = axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(err) = stopped {
        tracing::error!(error = %err, "ops listener failed");
    }
}
