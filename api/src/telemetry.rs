//! Logs and traces of the `backbone` processes: one `tracing` subscriber whose log layer writes
//! text or JSON lines to stderr, and, with `--otlp-endpoint`, an OpenTelemetry layer that exports
//! the spans over OTLP/HTTP (protobuf). The request span continues the caller's `traceparent`,
//! and the projection spans continue the one stored with each event ([`commands::trace`]), so a
//! collector shows a request and the projection work it caused, in any process, as one trace.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable text (dev).
    Text,
    /// JSON lines with the current span's fields (production).
    Json,
}

/// OTLP's path for traces, appended to the `--otlp-endpoint` base URL as the
/// `OTEL_EXPORTER_OTLP_ENDPOINT` convention asks.
pub const TRACES_PATH: &str = "/v1/traces";

/// Parses an `--otlp-endpoint`: an http(s) base URL such as `http://collector:4318`.
pub fn parse_otlp_endpoint(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http(s) URL such as http://127.0.0.1:4318".into());
    }
    let base = url.as_str().trim_end_matches('/');
    Ok(base.strip_suffix(TRACES_PATH).unwrap_or(base).to_owned())
}

/// Keeps the trace exporter alive; dropping it sends the spans still buffered.
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                // The log layer outlives the exporter: the global subscriber stays installed.
                tracing::warn!(error = %e, "exporting the last spans failed");
            }
        }
    }
}

/// Installs the process's subscriber. `service` names the process in the collector
/// (`backbone-serve`, `backbone-relay`, `backbone-worker-catalog`, ...). RUST_LOG filters both
/// the logs and the exported spans (`default_filter` when unset).
pub fn init(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service: &str,
    default_filter: &str,
) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Logs go to stderr: stdout carries the token, the NDJSON export and EMF lines.
    // Colours only for a person at a terminal, never into a log file or collector.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let provider = otlp_endpoint
        .map(|base| tracer_provider(base, service))
        .transpose()?;
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("backbone"))
            .with_filter(tracing_subscriber::filter::DynFilterFn::new(exported))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(filter)
        .try_init()?;
    Ok(Telemetry { provider })
}

/// The spans that start a trace's work in a process: a request, and the relay and projection of
/// an event that continue one.
pub const TRACE_ROOTS: &[&str] = &["request", "relay", "project"];

/// Which spans and events are exported: the [`TRACE_ROOTS`] and everything inside them. The
/// idle polling of the feed, the queues and the stream (several spans a second per process,
/// belonging to no request) stays in the logs.
fn exported<S>(meta: &tracing::Metadata<'_>, cx: &tracing_subscriber::layer::Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // The context only sees the spans this filter let through.
    (meta.is_span() && TRACE_ROOTS.contains(&meta.name())) || cx.lookup_current().is_some()
}

fn tracer_provider(base: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}{TRACES_PATH}"))
        .with_timeout(Duration::from_secs(10))
        .build()?;
    // Batches leave every OTEL_BSP_SCHEDULE_DELAY (5 s unless set), off the request path.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_endpoint_is_an_http_base_url() {
        assert_eq!(
            parse_otlp_endpoint("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318"
        );
        assert_eq!(
            parse_otlp_endpoint("https://otel.example.com/v1/traces").unwrap(),
            "https://otel.example.com"
        );
        assert!(parse_otlp_endpoint("127.0.0.1:4318").is_err());
        assert!(parse_otlp_endpoint("ftp://collector").is_err());
    }
}
