//! Worker loops: a failing projection is retried with backoff and reported unhealthy, never
//! skipped; commits wake idle projections at once; cancellation stops workers.

mod common;
use common::{
    append, open_store, record_sequence, spawn_fast, stop, store_with_events, wait_until,
};

use commands::EventEnvelope;
use projections::runner::ProjectionRunner;
use projections::{DocTx, MemoryReadModelStore, Projection, ProjectionError, ReadModelStore};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use workers::{CancellationToken, Health};

/// Records the sequences it applied per stream; fails on the event with `sequence == fail_on`
/// until it has failed `budget` times.
struct Flaky {
    fail_on: u64,
    failures: AtomicU32,
    budget: u32,
}

impl Projection for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn collections(&self) -> &'static [&'static str] {
        &["flaky"]
    }
    fn indexes(&self) -> &'static [&'static str] {
        &[]
    }
    fn streams(&self) -> &'static [domain::StreamType] {
        &domain::StreamType::ALL
    }
    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        if event.sequence == self.fail_on && self.failures.load(Ordering::SeqCst) < self.budget {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(ProjectionError::CorruptDoc {
                collection: "flaky".into(),
                key: event.stream_id.clone(),
                reason: "injected failure".into(),
            });
        }
        record_sequence(tx, "flaky", event)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_projection_retries_reports_unhealthy_and_never_skips_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_events(&dir, "s1", 5).await;
    let models = Arc::new(MemoryReadModelStore::new());
    let flaky = Arc::new(Flaky {
        fail_on: 3,
        failures: AtomicU32::new(0),
        budget: 4,
    });
    let runner = Arc::new(ProjectionRunner::new(
        store.clone(),
        models.clone(),
        flaky.clone(),
        100,
    ));
    let health = Health::default();
    let cancel = CancellationToken::new();
    let seen_unhealthy = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (health, seen) = (health.clone(), seen_unhealthy.clone());
        tokio::spawn(async move {
            for _ in 0..20_000 {
                if health
                    .snapshot()
                    .get("projection:flaky")
                    .is_some_and(|s| !s.healthy && s.last_error.is_some())
                {
                    seen.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let task = spawn_fast(runner, &store, &health, &cancel);
    wait_until(
        || flaky.failures.load(Ordering::SeqCst) >= 4,
        "four failures",
    )
    .await;
    watcher.await.unwrap();
    assert!(
        seen_unhealthy.load(Ordering::SeqCst),
        "the worker reported itself unhealthy while failing"
    );
    wait_until(
        || health.position("projection:flaky") == Some(5),
        "catch-up",
    )
    .await;
    let doc = models.get("flaky", "s1").await.unwrap().unwrap();
    assert_eq!(
        doc["seqs"],
        serde_json::json!([1, 2, 3, 4, 5]),
        "nothing skipped, nothing doubled"
    );
    let status = health.snapshot()["projection:flaky"].clone();
    assert!(status.healthy && status.last_error.is_none());
    stop(&cancel, [task]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_projection_is_woken_by_a_commit_long_before_its_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let models = Arc::new(MemoryReadModelStore::new());
    let quiet = Arc::new(Flaky {
        fail_on: 0,
        failures: AtomicU32::new(0),
        budget: 0,
    });
    let runner = Arc::new(ProjectionRunner::new(store.clone(), models, quiet, 100));
    let health = Health::default();
    let cancel = CancellationToken::new();
    // The poll interval is 30 s: only the commit notification can wake it within the bound.
    let task = spawn_fast(runner, &store, &health, &cancel);
    wait_until(
        || {
            health
                .snapshot()
                .get("projection:flaky")
                .is_some_and(|s| s.caught_up)
        },
        "idle",
    )
    .await;
    for v in 0..3 {
        append(store.as_ref(), "s1", v).await;
        let reached = health
            .wait_for("projection:flaky", v + 1, Duration::from_secs(5))
            .await;
        assert!(reached, "woken by commit {v}");
    }
    stop(&cancel, [task]).await;
}
