//! Traces end to end, against the real binary and a local OTLP collector that the test starts:
//! a request's W3C `traceparent` is continued by its request span, stored in the metadata of the
//! events it appends, and continued again by the projection span that applies each event. On
//! the embedded backend that span comes from the same process (through the SQLite feed); on AWS
//! from the catalog worker process (through DynamoDB Streams → relay → EventBridge → SQS).

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;
#[path = "support/process.rs"]
mod process;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use process::{aws_serve_args, embedded_serve_args, until_ok, Process};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "traces-test-secret";

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/HTTP collector on 127.0.0.1:0 that keeps every span it receives; stopped on drop.
struct Collector {
    base: String,
    spans: Arc<Mutex<Vec<Exported>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("the exporter sends OTLP protobuf");
                    sink.lock().unwrap().extend(flatten(request));
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("collector");
        });
        Self {
            base,
            spans,
            server,
        }
    }

    /// Waits for the first span that `wanted` accepts.
    async fn span(&self, what: &str, wanted: impl Fn(&Exported) -> bool) -> Exported {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.spans.lock().unwrap().iter().find(|s| wanted(s)) {
                return found.clone();
            }
            if Instant::now() > deadline {
                let seen: BTreeMap<(String, String), usize> = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .fold(BTreeMap::new(), |mut seen, s| {
                        *seen.entry((s.service.clone(), s.name.clone())).or_default() += 1;
                        seen
                    });
                panic!("no {what} span reached the collector; it has {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Exported {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    out
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

/// A caller's context: a new trace id, and the caller's own span id.
fn caller_traceparent() -> (String, String, String) {
    let trace_id = hex::encode(rand::random::<[u8; 16]>());
    let span_id = hex::encode(rand::random::<[u8; 8]>());
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Creates a product with `traceparent`, as an admin; the catalog projection applies its event.
async fn create_product_traced(api: &str, product: &str, traceparent: &str) {
    let token = process::admin_token(JWT_SECRET);
    let answer = reqwest::Client::new()
        .post(format!("{api}/v1/admin/products"))
        .bearer_auth(token)
        .header("traceparent", traceparent)
        .json(&serde_json::json!({
            "product_id": product, "name": "Traced", "category": "misc",
            "price": { "amount": "9.90", "currency": "EUR" }, "initial_stock": 5
        }))
        .send()
        .await
        .expect("POST /v1/admin/products");
    let status = answer.status();
    assert_eq!(status, 201, "{}", answer.text().await.unwrap_or_default());
}

/// The request span continues the caller's trace; the catalog projection's span for the event
/// continues the request span, in `projector`'s process. Returns the request span.
async fn assert_one_trace(
    collector: &Collector,
    caller: &(String, String, String),
    projector: &str,
) -> Exported {
    let (_, trace_id, caller_span) = caller;
    let request = collector
        .span("request", |s| {
            s.name == "request" && s.trace_id == *trace_id
        })
        .await;
    assert_eq!(request.service, "backbone-serve");
    assert_eq!(
        &request.parent_span_id, caller_span,
        "the request span is the caller's child"
    );
    assert_eq!(
        request.attributes.get("path").map(String::as_str),
        Some("/v1/admin/products")
    );
    let project = collector
        .span("catalog projection", |s| {
            s.name == "project"
                && s.trace_id == *trace_id
                && s.attributes.get("projection").map(String::as_str) == Some("catalog")
        })
        .await;
    assert_eq!(project.service, projector, "{project:?}");
    assert_eq!(
        project.parent_span_id, request.span_id,
        "the projection span is the request span's child: {project:?}"
    );
    assert_eq!(
        project.attributes.get("event_type").map(String::as_str),
        Some("ProductCreated"),
        "{project:?}"
    );
    assert_eq!(
        project.attributes.get("trace_id"),
        Some(trace_id),
        "the trace id is also a field, for the logs"
    );
    // The inside of the request is part of the trace (the append, for one); idle polling,
    // which belongs to no request, is not exported at all.
    collector
        .span("append inside the request", |s| {
            s.name == "append" && s.trace_id == *trace_id
        })
        .await;
    let spans = collector.spans.lock().unwrap();
    let idle: Vec<&Exported> = spans
        .iter()
        .filter(|s| ["step_with", "step", "receive", "read"].contains(&s.name.as_str()))
        .collect();
    assert!(
        idle.is_empty(),
        "idle polling was exported: {:?}",
        &idle[..idle.len().min(3)]
    );
    request.clone()
}

/// Environment for every traced process: batches leave every 100 ms instead of every 5 s.
const FAST_EXPORT: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "100")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_projection_span_carries_the_trace_of_the_request_that_caused_it() {
    let collector = Collector::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut args = embedded_serve_args(data.path().to_str().expect("utf-8 path"));
    args.extend([
        "--synchronous",
        "normal",
        "--no-demo",
        "--jwt-secret",
        JWT_SECRET,
    ]);
    args.extend(["--otlp-endpoint", &collector.base]);
    let server = Process::spawn_with_env(&args, FAST_EXPORT);
    let api = server.address("serving the HTTP API");
    until_ok(&format!("{api}/readyz")).await;
    let caller = caller_traceparent();
    create_product_traced(&api, "traced-1", &caller.0).await;
    assert_one_trace(&collector, &caller, "backbone-serve").await;
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_the_worker_process_continues_the_trace_of_the_request_through_the_relay() {
    let collector = Collector::start().await;
    let names = moto::fresh_names();
    let stage = names.stage.as_str();
    let common = ["--stage", stage, "--otlp-endpoint", collector.base.as_str()];
    let serve = [
        &aws_serve_args(stage, JWT_SECRET)[..],
        &["--provision", "--otlp-endpoint", collector.base.as_str()],
    ]
    .concat();
    let server = Process::spawn_with_env(&serve, FAST_EXPORT);
    let api = server.address("serving the HTTP API");
    until_ok(&format!("{api}/readyz")).await;
    let relay = Process::spawn_with_env(&[&["relay"][..], &common[..]].concat(), FAST_EXPORT);
    let worker = Process::spawn_with_env(
        &[&["worker", "catalog", "--wait-secs", "1"][..], &common[..]].concat(),
        FAST_EXPORT,
    );
    let caller = caller_traceparent();
    create_product_traced(&api, "traced-aws-1", &caller.0).await;
    let request = assert_one_trace(&collector, &caller, "backbone-worker-catalog").await;
    // The relay's hop is in the trace too.
    let relayed = collector
        .span("relay", |s| s.name == "relay" && s.trace_id == caller.1)
        .await;
    assert_eq!(relayed.service, "backbone-relay");
    assert_eq!(relayed.parent_span_id, request.span_id);
    for process in [worker, relay, server] {
        assert!(process.stop().success());
    }
}
