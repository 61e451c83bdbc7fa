//! What the benches share: their command-line and environment arguments, logging, and (for the
//! embedded ones) seeding orders straight into the event store (no commands), so that a bench
//! times only what it measures.

use commands::{
    Commit, EventStore, ManualClock, Metadata, NewEvent, Shop, StreamAppend, StreamRef,
};
use domain::{Event, Money, OrderEvent, OrderId, PaymentId, StreamType};
use projections::testsuite::fixtures::one_unit_order_placed;
use projections::{Projection, ProjectionRunner, ReadModelStore};
use std::sync::Arc;

/// An embedded backend in a temporary directory, opened as `backbone serve` opens it.
pub struct Embedded {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn EventStore>,
    pub models: Arc<dyn ReadModelStore>,
}

/// The event store and read models of the data directory `dir`, opened as `serve` opens them.
pub async fn open_stores(dir: &std::path::Path) -> (Arc<dyn EventStore>, Arc<dyn ReadModelStore>) {
    let store = api::compose::open_event_store(dir, true)
        .await
        .expect("event store")
        .store;
    let models = api::compose::open_read_models(dir)
        .await
        .expect("read models");
    (store, models)
}

impl Embedded {
    pub async fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, models) = open_stores(dir.path()).await;
        Self { dir, store, models }
    }

    /// The shop as `serve` composes it, on `clock`, paying through the simulated gateway.
    pub fn shop(&self, clock: Arc<ManualClock>) -> Arc<Shop> {
        let service = api::compose::command_service(
            self.store.clone(),
            clock,
            commands::ServiceConfig::default(),
        );
        Arc::new(Shop::new(
            service,
            Arc::new(infrastructure::simulated::SimulatedGateway::new()),
        ))
    }

    /// Builds `projection`'s read model from the whole feed and returns its runner.
    pub async fn project(&self, projection: Arc<dyn Projection>) -> ProjectionRunner {
        let runner = ProjectionRunner::new(
            self.store.clone(),
            self.models.clone(),
            projection,
            projections::runner::DEFAULT_BATCH,
        );
        runner.rebuild(|_, _| {}).await.expect("projection");
        runner
    }
}

/// The events of the bench's `i`th order, placed and paid at `at`.
pub fn paid_order(i: usize, at: chrono::DateTime<chrono::Utc>) -> Vec<NewEvent> {
    vec![
        new_event(&order_placed(i, at), at, i),
        new_event(&order_paid(i, at), at, i),
    ]
}

/// Logs to stderr, filtered by `RUST_LOG`, when it is set; stdout holds the bench's report.
pub fn log_to_stderr_when_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
}

/// The environment variable `name` as a number, or `default` when it is unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value after `name` on the command line (`--orders 1000`), or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The id of the bench's `i`th order.
pub fn order_id(i: usize) -> String {
    format!("ord_{i:07}")
}

/// The `OrderPlaced` of the bench's `i`th order: one unit at 4.00 EUR, by one of 5,000
/// customers.
pub fn order_placed(i: usize, at: chrono::DateTime<chrono::Utc>) -> OrderEvent {
    one_unit_order_placed(
        &order_id(i),
        &format!("cus_{}", i % 5_000),
        &format!("c{}@example.com", i % 5_000),
        crate::aws::checkout_input("bench@example.com").shipping_address,
        Money::parse("4.00", "EUR").unwrap(),
        at,
    )
}

/// The `OrderPaid` that follows [`order_placed`].
pub fn order_paid(i: usize, at: chrono::DateTime<chrono::Utc>) -> OrderEvent {
    OrderEvent::OrderPaid {
        order_id: OrderId::parse(&order_id(i)).unwrap(),
        payment_id: PaymentId::parse(&format!("pay-{}", order_id(i))).unwrap(),
        amount: Money::parse("4.00", "EUR").unwrap(),
        at,
    }
}

/// An order event as the store takes it.
pub fn new_event(event: &OrderEvent, at: chrono::DateTime<chrono::Utc>, i: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event.event_type().to_string(),
        event_version: event.event_version(),
        occurred_at: at,
        payload: commands::Payload::of_event(event),
        metadata: Metadata {
            correlation_id: format!("bench-{i}"),
            ..Metadata::default()
        },
    }
}

/// Appends order streams `0..n`, each new, with the events `events(i)`, as many streams per
/// commit as the store's limit of writes allows.
pub async fn seed_orders(
    store: &dyn EventStore,
    n: usize,
    events: impl Fn(usize) -> Vec<NewEvent>,
) {
    const WRITES_PER_COMMIT: usize = 100;
    let mut streams = Vec::new();
    let mut writes = 0;
    for i in 0..n {
        let events = events(i);
        if writes + events.len() > WRITES_PER_COMMIT {
            commit(store, std::mem::take(&mut streams)).await;
            writes = 0;
        }
        writes += events.len();
        streams.push(StreamAppend {
            stream: StreamRef::new(StreamType::Order, order_id(i)),
            expected_version: 0,
            events,
            snapshot: None,
        });
    }
    commit(store, streams).await;
}

async fn commit(store: &dyn EventStore, streams: Vec<StreamAppend>) {
    if streams.is_empty() {
        return;
    }
    store
        .append(Commit {
            streams,
            idempotency: None,
        })
        .await
        .expect("seed");
}
