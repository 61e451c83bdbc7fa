//! Rebuilding one projection inside a running set of workers: the rebuilt projection's worker
//! is held while its read model is dropped and replayed, the other projections keep applying new
//! events meanwhile, and afterwards the rebuilt one catches up with nothing lost or doubled.

mod common;
use commands::FeedCursor;
use common::{append, record_sequence, spawn_fast, stop, store_with_events, wait_until};

use commands::{EventEnvelope, EventStore, StoreError};
use projections::runner::ProjectionRunner;
use projections::{DocTx, MemoryReadModelStore, Projection, ProjectionError, ReadModelStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use workers::{CancellationToken, Health, RebuildError, RebuildState, Rebuilds};

/// Records the sequences it applied per stream, in its own collection.
struct Recorder(&'static str);

impl Projection for Recorder {
    fn name(&self) -> &'static str {
        self.0
    }
    fn collections(&self) -> &'static [&'static str] {
        match self.0 {
            "rebuilt" => &["rebuilt"],
            _ => &["other"],
        }
    }
    fn indexes(&self) -> &'static [&'static str] {
        &[]
    }
    fn streams(&self) -> &'static [domain::StreamType] {
        &domain::StreamType::ALL
    }
    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        record_sequence(tx, self.0, event)
    }
}

/// The event store as the rebuilt projection sees it: reads from position 0 (a rebuild's
/// replay) wait while the gate is closed.
struct GatedStore {
    inner: Arc<dyn EventStore>,
    open: watch::Receiver<bool>,
}

impl GatedStore {
    async fn pass(&self, after: &FeedCursor) {
        if *after == FeedCursor::start() {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
        }
    }
}

// `feed_filtered` is the trait's default, which reads through the gated `feed`.
commands::forward_event_store! {
    impl[] for GatedStore, to |s| &s.inner,
    forward [append, load, read, feed_in_time, head, idempotency, commit_notifier] {
        async fn feed(&self, after: &FeedCursor, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
            self.pass(after).await;
            self.inner.feed(after, limit).await
        }
    }
}

async fn seqs(models: &MemoryReadModelStore, collection: &str) -> Option<serde_json::Value> {
    models
        .get(collection, "s1")
        .await
        .unwrap()
        .map(|d| d["seqs"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_projection_is_rebuilt_while_the_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_events(&dir, "s1", 5).await;
    let (gate, open) = watch::channel(true);
    let gated: Arc<dyn EventStore> = Arc::new(GatedStore {
        inner: store.clone(),
        open,
    });
    let models = Arc::new(MemoryReadModelStore::new());
    let health = Health::default();
    let cancel = CancellationToken::new();
    let rebuilt = Arc::new(ProjectionRunner::new(
        gated,
        models.clone(),
        Arc::new(Recorder("rebuilt")),
        100,
    ));
    let other = Arc::new(ProjectionRunner::new(
        store.clone(),
        models.clone(),
        Arc::new(Recorder("other")),
        100,
    ));
    let mut rebuilds = Rebuilds::new(health.clone());
    rebuilds.add(rebuilt.clone());
    rebuilds.add(other.clone());
    let rebuilds = Arc::new(rebuilds);
    let rebuilt_done = || {
        rebuilds
            .status("rebuilt")
            .is_some_and(|s| s.state == RebuildState::Done)
    };
    let tasks = [rebuilt, other].map(|runner| spawn_fast(runner, &store, &health, &cancel));
    let at = |name: &str| health.position(&workers::projection_worker(name));
    wait_until(
        || at("rebuilt") == Some(5) && at("other") == Some(5),
        "catch-up",
    )
    .await;

    // The rebuild starts and holds its replay at the gate: the read model is already dropped.
    gate.send_replace(false);
    let started = rebuilds.start("rebuilt").unwrap();
    assert_eq!(started.state, RebuildState::Running);
    assert_eq!(
        rebuilds.start("rebuilt"),
        Err(RebuildError::AlreadyRunning("rebuilt".into()))
    );
    assert_eq!(
        rebuilds.start("nope"),
        Err(RebuildError::Unknown("nope".into()))
    );
    let mut reset = false;
    for _ in 0..5_000 {
        if seqs(&models, "rebuilt").await.is_none() {
            reset = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(reset, "the rebuild dropped the read model");

    // New events meanwhile: the other projection applies them, the rebuilt one's worker waits.
    for v in 5..8 {
        append(store.as_ref(), "s1", v).await;
    }
    wait_until(|| at("other") == Some(8), "the other projection").await;
    assert_eq!(
        seqs(&models, "other").await,
        Some(serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8]))
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        at("rebuilt"),
        Some(5),
        "the rebuilt projection's worker is held"
    );
    assert_eq!(seqs(&models, "rebuilt").await, None);
    assert_eq!(
        rebuilds.status("rebuilt").map(|s| s.state),
        Some(RebuildState::Running)
    );

    // Released, the rebuild replays to the head it saw and the worker carries on from there.
    gate.send_replace(true);
    wait_until(rebuilt_done, "the rebuild").await;
    wait_until(|| at("rebuilt") == Some(8), "the rebuilt projection").await;
    assert_eq!(
        seqs(&models, "rebuilt").await,
        Some(serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8])),
        "nothing lost, nothing applied twice"
    );
    let done = rebuilds.status("rebuilt").unwrap();
    assert!(done.finished_at.is_some() && done.error.is_none());
    assert!(done.events >= 5 && done.position >= 5, "{done:?}");
    // A finished rebuild can be started again.
    assert!(rebuilds.start("rebuilt").is_ok());
    wait_until(rebuilt_done, "the second rebuild").await;

    stop(&cancel, tasks).await;
}
