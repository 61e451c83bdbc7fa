//! Serving the API until a shutdown signal, then stopping the workers.

use crate::compose::Embedded;
use crate::router::app;
use std::future::Future;
use tokio::net::TcpListener;

/// Serves until SIGTERM or ctrl-c, then shuts down gracefully.
pub async fn serve(listener: TcpListener, embedded: Embedded) -> anyhow::Result<()> {
    serve_until(listener, embedded, shutdown_signal()).await
}

/// Serves until `signal` resolves or the embedded backbone's cancellation token fires, lets
/// in-flight requests finish, then stops the workers.
pub async fn serve_until(
    listener: TcpListener,
    embedded: Embedded,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving the HTTP API");
    let router = if embedded.ops_addr().is_some() {
        crate::router::app_without_metrics(embedded.state.clone())
    } else {
        app(embedded.state.clone())
    };
    let cancel = embedded.cancel.clone();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = signal => {}
                _ = cancel.cancelled() => {}
            }
            tracing::info!("shutting down");
        })
        .await;
    embedded.shutdown().await;
    result.map_err(Into::into)
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
