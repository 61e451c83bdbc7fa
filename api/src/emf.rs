//! CloudWatch metrics as Embedded Metric Format (EMF) lines: on AWS each process prints, once a
//! minute, one JSON line to stdout that CloudWatch Logs turns into the metrics of
//! [`METRICS`], in namespace [`NAMESPACE`] with the dimension `Stage`. The template's alarms
//! watch exactly these (a test reads the template and checks it).
//!
//! The values come from the same registry `/metrics` renders: the emitter reads the Prometheus
//! text, so nothing is counted twice. Counters become the increase since the previous line;
//! gauges their highest value over the workers; latencies the 99th percentile. A metric whose
//! source no part of this process records is left out of its lines (an alarm then sees no
//! data from this process, as it should).

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;
use workers::{CancellationToken, Health};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Backbone";

/// Where a CloudWatch metric's value comes from in the Prometheus registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The highest value of a gauge family over its labels.
    GaugeMax(&'static str),
    /// The increase of a counter family (summed over its labels, or only the series whose
    /// labels contain the given text) since the previous line.
    CounterIncrease(&'static str, Option<&'static str>),
    /// The 0.99 quantile of a summary family in seconds, as milliseconds (the highest over its
    /// labels).
    P99Millis(&'static str),
}

/// One CloudWatch metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmfMetric {
    pub name: &'static str,
    pub unit: &'static str,
    pub source: Source,
}

use crate::metrics::{
    HTTP_DURATION, HTTP_RESPONSES, PROJECTION_LAG_POSITIONS, PROJECTION_LAG_SECONDS,
};
use commands::process::PAYMENTS_FAILED;
use workers::delivery::NOTIFICATIONS_FAILED;
use workers::relay::RELAY_ITERATOR_AGE;

/// Every metric published, declared once: the emitter writes these, the alarms watch them.
pub const METRICS: &[EmfMetric] = &[
    EmfMetric {
        name: "RelayIteratorAgeMilliseconds",
        unit: "Milliseconds",
        source: Source::GaugeMax(RELAY_ITERATOR_AGE),
    },
    EmfMetric {
        name: "ProjectionLagPositions",
        unit: "Count",
        source: Source::GaugeMax(PROJECTION_LAG_POSITIONS),
    },
    EmfMetric {
        name: "ProjectionLagSeconds",
        unit: "Seconds",
        source: Source::GaugeMax(PROJECTION_LAG_SECONDS),
    },
    EmfMetric {
        name: "Api5xxCount",
        unit: "Count",
        source: Source::CounterIncrease(HTTP_RESPONSES, Some("class=\"5xx\"")),
    },
    EmfMetric {
        name: "ApiLatencyP99Milliseconds",
        unit: "Milliseconds",
        source: Source::P99Millis(HTTP_DURATION),
    },
    EmfMetric {
        name: "FailedPayments",
        unit: "Count",
        source: Source::CounterIncrease(PAYMENTS_FAILED, None),
    },
    EmfMetric {
        name: "FailedNotifications",
        unit: "Count",
        source: Source::CounterIncrease(NOTIFICATIONS_FAILED, None),
    },
];

/// One sample line of the Prometheus text: its family, labels and value.
fn samples(text: &str) -> Vec<(&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (family, labels) = match series.split_once('{') {
                Some((family, labels)) => (family, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((family, labels, value))
        })
        .collect()
}

/// Turns the registry's text into EMF lines, remembering counters between lines.
#[derive(Debug, Default)]
pub struct Emitter {
    stage: String,
    counted: HashMap<&'static str, f64>,
}

impl Emitter {
    pub fn new(stage: impl Into<String>) -> Self {
        Self {
            stage: stage.into(),
            counted: HashMap::new(),
        }
    }

    /// The EMF line for `text` (a Prometheus exposition) at `timestamp_ms`; `None` when none of
    /// [`METRICS`] has a source in it.
    pub fn line(&mut self, text: &str, timestamp_ms: i64) -> Option<String> {
        let samples = samples(text);
        let mut values = Map::new();
        let mut declared = Vec::new();
        for metric in METRICS {
            let value = match metric.source {
                Source::GaugeMax(family) => samples
                    .iter()
                    .filter(|(f, ..)| *f == family)
                    .map(|(.., v)| *v)
                    .reduce(f64::max),
                Source::CounterIncrease(family, only) => {
                    let total = samples
                        .iter()
                        .filter(|(f, labels, _)| {
                            *f == family && only.is_none_or(|o| labels.contains(o))
                        })
                        .map(|(.., v)| *v)
                        .reduce(|a, b| a + b);
                    total.map(|total| {
                        let before = self.counted.insert(metric.name, total).unwrap_or(0.0);
                        (total - before).max(0.0)
                    })
                }
                Source::P99Millis(family) => samples
                    .iter()
                    .filter(|(f, labels, _)| *f == family && labels.contains("quantile=\"0.99\""))
                    .map(|(.., v)| *v * 1000.0)
                    .reduce(f64::max),
            };
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            values.insert(metric.name.to_owned(), json!(value));
            declared.push(json!({ "Name": metric.name, "Unit": metric.unit }));
        }
        if declared.is_empty() {
            return None;
        }
        let mut line = Map::new();
        line.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Stage"]],
                    "Metrics": declared,
                }],
            }),
        );
        line.insert("Stage".to_owned(), Value::String(self.stage.clone()));
        line.extend(values);
        Some(Value::Object(line).to_string())
    }
}

/// Prints one EMF line to stdout every `interval` until `cancel` fires (and one last line).
/// `health` refreshes the worker gauges first, `store` the lag of the workers that follow the
/// feed.
pub async fn run(
    handle: PrometheusHandle,
    stage: String,
    interval: Duration,
    health: Health,
    store: Option<std::sync::Arc<dyn commands::EventStore>>,
    cancel: CancellationToken,
) {
    use std::io::Write;
    let mut emitter = Emitter::new(stage);
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        let text = crate::metrics::render(&handle, store.as_deref(), &health).await;
        if let Some(line) = emitter.line(&text, chrono::Utc::now().timestamp_millis()) {
            let mut out = std::io::stdout().lock();
            if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                tracing::warn!(error = %err, "cannot write a metrics line");
            }
        }
        if stop {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE backbone_http_responses_total counter
backbone_http_responses_total{class=\"2xx\"} 90
backbone_http_responses_total{class=\"5xx\"} 3
backbone_http_request_duration_seconds{quantile=\"0.5\"} 0.002
backbone_http_request_duration_seconds{quantile=\"0.99\"} 0.25
backbone_projection_lag_seconds{worker=\"a\"} 1.5
backbone_projection_lag_seconds{worker=\"b\"} 4
backbone_payments_failed_total 2
";

    #[test]
    fn counters_become_increases_and_absent_sources_are_left_out() {
        let mut emitter = Emitter::new("prod");
        let first: Value = serde_json::from_str(&emitter.line(TEXT, 1_000).unwrap()).unwrap();
        assert_eq!(first["Stage"], "prod");
        assert_eq!(first["Api5xxCount"], 3.0);
        assert_eq!(first["ApiLatencyP99Milliseconds"], 250.0);
        assert_eq!(first["ProjectionLagSeconds"], 4.0);
        assert_eq!(first["FailedPayments"], 2.0);
        assert!(first.get("RelayIteratorAgeMilliseconds").is_none());
        let declared = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], NAMESPACE);
        assert_eq!(declared["Dimensions"], json!([["Stage"]]));
        assert_eq!(declared["Metrics"].as_array().unwrap().len(), 4);
        let later = TEXT.replace("class=\"5xx\"} 3", "class=\"5xx\"} 5");
        let second: Value = serde_json::from_str(&emitter.line(&later, 61_000).unwrap()).unwrap();
        assert_eq!(
            second["Api5xxCount"], 2.0,
            "the increase since the last line"
        );
        assert_eq!(second["FailedPayments"], 0.0);
        assert!(Emitter::new("x").line("# nothing\n", 0).is_none());
    }
}
