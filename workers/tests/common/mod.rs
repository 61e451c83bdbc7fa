//! Helpers shared by the worker test binaries.

use commands::{Commit, EventEnvelope, EventStore, Metadata, NewEvent, StreamAppend, StreamRef};
use domain::StreamType;
use projections::docs::{no_index, update_doc};
use projections::{DocTx, ProjectionError};
use std::sync::Arc;
use std::time::Duration;
use workers::{CancellationToken, LoopConfig};

/// Polls `check` every millisecond until it holds; fails the test after 10 s.
pub async fn wait_until(mut check: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A fresh SQLite event store in `dir`.
pub fn open_store(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    Arc::new(
        infrastructure::sqlite::SqliteEventStore::open(
            dir.path().join("events.sqlite"),
            infrastructure::sqlite::SqliteOptions::default(),
        )
        .unwrap(),
    )
}

/// A fresh SQLite event store in `dir` with `count` product events on `stream`.
pub async fn store_with_events(
    dir: &tempfile::TempDir,
    stream: &str,
    count: u64,
) -> Arc<dyn EventStore> {
    let store = open_store(dir);
    for version in 0..count {
        append(store.as_ref(), stream, version).await;
    }
    store
}

/// Appends one product event to `stream`, which must be at `version`.
pub async fn append(store: &dyn EventStore, stream: &str, version: u64) {
    store
        .append(Commit {
            streams: vec![StreamAppend {
                stream: StreamRef::new(StreamType::Product, stream),
                expected_version: version,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: "ProductRestocked".into(),
                    event_version: 1,
                    occurred_at: chrono::Utc::now(),
                    payload: serde_json::json!({ "n": version + 1 }).into(),
                    metadata: Metadata::default(),
                }],
                snapshot: None,
            }],
            idempotency: None,
        })
        .await
        .unwrap();
}

/// Adds the event's sequence to the `seqs` list of its stream's document in `collection`.
pub fn record_sequence(
    tx: &mut dyn DocTx,
    collection: &str,
    event: &EventEnvelope,
) -> Result<(), ProjectionError> {
    update_doc(tx, collection, &event.stream_id, no_index, |doc| {
        let doc = doc.get_or_insert_with(|| serde_json::json!({ "seqs": [] }));
        if let Some(seqs) = doc["seqs"].as_array_mut() {
            seqs.push(serde_json::json!(event.sequence));
        }
    })
}

/// Quick backoff, and a 30 s poll: within a test only a commit notification wakes an idle worker.
pub fn fast() -> LoopConfig {
    LoopConfig {
        poll: Duration::from_secs(30),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
    }
}

/// Spawns `runner`'s loop on `store`'s commit notifications, with [`fast`] timing.
pub fn spawn_fast(
    runner: Arc<projections::ProjectionRunner>,
    store: &Arc<dyn EventStore>,
    health: &workers::Health,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let context = workers::LoopContext::new(health.clone(), cancel.clone(), fast());
    workers::spawn_projection(runner, store.commit_notifier(), context)
}

/// Cancels the workers and checks that each task ends cleanly within 5 s.
pub async fn stop(
    cancel: &CancellationToken,
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
) {
    cancel.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
