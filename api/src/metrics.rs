//! Prometheus metrics. The recorder is process-global (the `metrics` facade has one), so it is
//! installed once and every [`AppState`](crate::state::AppState) shares its handle; several apps in
//! one test process therefore share counters, which is harmless.

use commands::EventStore;
use commands::FeedCursor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use workers::Health;

/// Command latency histogram, labelled `command` = "METHOD /route/{template}".
pub const COMMAND_DURATION: &str = "backbone_command_duration_seconds";
/// Every API answer, by status class (`2xx` … `5xx`).
pub const HTTP_RESPONSES: &str = "backbone_http_responses_total";
/// Every API request's latency: a summary, so `/metrics` renders its quantiles.
pub const HTTP_DURATION: &str = "backbone_http_request_duration_seconds";
pub use workers::health::{PROJECTION_LAG_POSITIONS, PROJECTION_LAG_SECONDS};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the global recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new();
            let builder = match builder
                .set_buckets_for_metric(Matcher::Full(COMMAND_DURATION.to_string()), &buckets)
            {
                Ok(b) => b,
                Err(err) => {
                    tracing::warn!(error = %err, "histogram buckets refused, using summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a global metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(HTTP_RESPONSES, "API answers by status class");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "latency of every API request"
    );
    metrics::describe_counter!(
        commands::process::PAYMENTS_FAILED,
        "payments the provider reported failed"
    );
    metrics::describe_counter!(
        workers::delivery::NOTIFICATIONS_FAILED,
        "notifications given up on"
    );
    metrics::describe_gauge!(
        workers::relay::RELAY_ITERATOR_AGE,
        metrics::Unit::Milliseconds,
        "how long ago the newest stream record the relay read was committed"
    );
    // The counters CloudWatch alarms watch exist from the start (at zero), so a quiet process
    // still reports "none". The relay's iterator age is only reported by the relay itself: a
    // dead relay must leave that metric without data.
    metrics::counter!(HTTP_RESPONSES, "class" => "5xx").increment(0);
    metrics::counter!(commands::process::PAYMENTS_FAILED).increment(0);
    metrics::counter!(workers::delivery::NOTIFICATIONS_FAILED).increment(0);
    metrics::describe_histogram!(
        COMMAND_DURATION,
        metrics::Unit::Seconds,
        "latency of command requests"
    );
    metrics::describe_counter!(
        "backbone_command_conflicts_total",
        "commands that still hit a version conflict after the automatic retries"
    );
    metrics::describe_counter!(
        "backbone_command_conflict_retries_total",
        "version conflicts met by the command service, each followed by a re-decide or, after the last attempt, a 409"
    );
    metrics::describe_gauge!(
        "backbone_worker_stalled",
        "1 while a worker's step has run longer than the stall limit (the process is not ready)"
    );
    metrics::describe_gauge!(
        PROJECTION_LAG_POSITIONS,
        "feed head minus the position a worker has reached"
    );
    metrics::describe_gauge!(
        PROJECTION_LAG_SECONDS,
        "age of the oldest feed event a worker has not processed yet"
    );
    metrics::describe_counter!(
        "backbone_webhook_outcomes_total",
        "payment provider webhooks by outcome"
    );
}

/// Refreshes the gauges computed on demand (worker health, and with the feed's `store` the lag
/// of the workers that follow it) and renders the exposition text.
pub async fn render(
    handle: &PrometheusHandle,
    store: Option<&dyn EventStore>,
    health: &Health,
) -> String {
    let snapshot = health.snapshot();
    for (name, status) in &snapshot {
        metrics::gauge!("backbone_worker_healthy", "worker" => name.clone())
            .set(if status.healthy { 1.0 } else { 0.0 });
        metrics::gauge!("backbone_worker_stalled", "worker" => name.clone())
            .set(if status.stalled { 1.0 } else { 0.0 });
    }
    let Some(store) = store else {
        handle.run_upkeep();
        return handle.render();
    };
    match store.head().await {
        Ok(head) => {
            let now = chrono::Utc::now();
            for (name, status) in snapshot {
                if !status.follows_feed {
                    continue;
                }
                // Health counts events read over all partitions.
                let lag = head.count().saturating_sub(status.position);
                metrics::gauge!(PROJECTION_LAG_POSITIONS, "worker" => name.clone()).set(lag as f64);
                // The oldest unread event is known where the feed has one partition (embedded):
                // there the count is the position.
                let seconds = if lag == 0 || head.positions().len() > 1 {
                    0.0
                } else {
                    match store.feed(&FeedCursor::at(status.position), 1).await {
                        Ok(page) => page
                            .first()
                            .map(|e| (now - e.occurred_at).num_milliseconds().max(0) as f64 / 1e3)
                            .unwrap_or(0.0),
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot compute lag in seconds");
                            0.0
                        }
                    }
                };
                metrics::gauge!(PROJECTION_LAG_SECONDS, "worker" => name).set(seconds);
            }
            metrics::gauge!("backbone_feed_head").set(head.count() as f64);
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the feed head for metrics"),
    }
    // Registered at zero until the webhook endpoint exists, so dashboards can be built now.
    for outcome in ["processed", "duplicate", "ignored", "rejected"] {
        metrics::counter!("backbone_webhook_outcomes_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("backbone_command_conflicts_total").increment(0);
    handle.run_upkeep();
    handle.render()
}
