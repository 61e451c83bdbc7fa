//! The SQLite read-model store: the port conformance suite, rebuild-equals-incremental on
//! simulated histories, durability across reopen, and the rebuild throughput target.
//!
//! The shared suite and fakes come from `projections`' `testsuite` feature (a dev-dependency).

use commands::EventStore;
use infrastructure::sqlite::SqliteReadModelStore;
use projections::testsuite::conformance;
use projections::testsuite::properties::incremental_equals_rebuild;
use projections::{all_projections, order_history, ProjectionRunner, ReadModelStore};
use std::sync::Arc;

#[path = "support/history.rs"]
mod history;
use history::{rebuild, rebuild_every_projection, simulated_history};

#[path = "support/size_watch.rs"]
mod size_watch;
use size_watch::SizeWatch;

fn file_store(dir: &tempfile::TempDir, name: &str) -> SqliteReadModelStore {
    SqliteReadModelStore::open(dir.path().join(name)).expect("open read model file")
}

/// `models` holds what a rebuild of `rebuilt` (the projections) from `store` into a fresh file
/// of `dir` holds; `what` names the comparison.
async fn assert_equals_a_rebuild(
    models: &SqliteReadModelStore,
    store: Arc<dyn EventStore>,
    rebuilt: &[Arc<dyn projections::Projection>],
    dir: &tempfile::TempDir,
    what: &str,
) {
    let fresh = Arc::new(file_store(dir, "rebuilt.sqlite"));
    rebuild(store, fresh.clone(), rebuilt, 1000, "rebuild").await;
    projections::testsuite::properties::assert_same_dump(
        &models.dump().expect("dump"),
        &fresh.dump().expect("dump"),
        what,
    );
}

#[tokio::test]
async fn the_in_memory_sqlite_store_passes_the_conformance_suite() {
    conformance::run_all(|| {
        (
            Arc::new(SqliteReadModelStore::open_in_memory().expect("open"))
                as Arc<dyn ReadModelStore>,
            Box::new(()) as conformance::Guard,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_backed_sqlite_store_passes_the_conformance_suite() {
    conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = file_store(&dir, "readmodels.sqlite");
        (
            Arc::new(store) as Arc<dyn ReadModelStore>,
            Box::new(dir) as conformance::Guard,
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_in_any_order_equals_rebuild_from_zero_on_sqlite() {
    for seed in 0..24_u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let steps = 10 + (seed as usize * 7) % 90;
        incremental_equals_rebuild(
            Arc::new(file_store(&dir, "incremental.sqlite")),
            Arc::new(file_store(&dir, "sequential.sqlite")),
            Arc::new(file_store(&dir, "rebuilt.sqlite")),
            |s: &SqliteReadModelStore| s.dump().expect("dump"),
            seed,
            steps,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_memory_stores_build_identical_documents() {
    let store = simulated_history(11, 250);
    let sqlite = Arc::new(SqliteReadModelStore::open_in_memory().expect("open"));
    let memory = Arc::new(projections::MemoryReadModelStore::new());
    rebuild_every_projection(store.clone(), sqlite.clone(), 97, "rebuild sqlite").await;
    rebuild_every_projection(store, memory.clone(), 97, "rebuild memory").await;
    projections::testsuite::properties::assert_same_dump(
        &sqlite.dump().expect("dump"),
        &memory.dump().expect("dump"),
        "sqlite vs memory",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_checkpoints_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = simulated_history(5, 80);
    let head = store.head().await.expect("head");
    {
        let models = Arc::new(file_store(&dir, "readmodels.sqlite"));
        for p in all_projections() {
            let runner = ProjectionRunner::new(store.clone(), models.clone(), p, 50);
            while runner.step().await.expect("step") != projections::StepOutcome::Idle {}
        }
    }
    let models = Arc::new(file_store(&dir, "readmodels.sqlite"));
    for p in all_projections() {
        assert_eq!(models.checkpoint(p.name()).await.expect("checkpoint"), head);
        let runner = ProjectionRunner::new(store.clone(), models.clone(), p, 50);
        assert_eq!(
            runner.step().await.expect("step"),
            projections::StepOutcome::Idle,
            "nothing is replayed after a restart"
        );
    }
    let orders = order_history::list_orders_for_customer(models.as_ref(), "alice", 100, None)
        .await
        .expect("list")
        .items;
    assert!(!orders.is_empty());
}

/// Two deliverers of the same projection at once (as two overlapping SQS consumers would be):
/// the optimistic check turns a race into a transient error and a retry, never a lost update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_of_one_projection_lose_no_update() {
    use projections::testsuite::fixtures::{unordered_delivery, Rng};
    for seed in 0..4_u64 {
        let store = simulated_history(100 + seed, 120);
        let feed = store.all();
        let dir = tempfile::tempdir().expect("tempdir");
        let models = Arc::new(file_store(&dir, "concurrent.sqlite"));
        let projection: Arc<dyn projections::Projection> =
            Arc::new(order_history::OrderHistoryProjection);
        let mut tasks = Vec::new();
        for k in 0..2_u64 {
            let runner =
                ProjectionRunner::new(store.clone(), models.clone(), projection.clone(), 8);
            let batches = unordered_delivery(&feed, &mut Rng::new(seed * 10 + k), 6);
            tasks.push(tokio::spawn(async move {
                for batch in batches {
                    // A lost race is a transient error: retry, as a worker would.
                    loop {
                        match runner.apply_with_gap_fill(batch.clone()).await {
                            Ok(_) => break,
                            Err(e) if e.is_transient() => continue,
                            Err(e) => panic!("apply failed: {e}"),
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let what = "concurrent deliveries vs rebuild";
        assert_equals_a_rebuild(&models, store, &[projection], &dir, what).await;
    }
}

/// Projections read snapshots and write batches all the time while events flow, so the WAL is
/// never idle long enough for SQLite to rewind it by itself. The store rewinds it after commits
/// (at most every 100 ms): the WAL must stay small, and the documents must still equal a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_small_while_projections_read_and_write() {
    let store = simulated_history(77, 4000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("readmodels.sqlite");
    let models = Arc::new(SqliteReadModelStore::open(&path).expect("open"));
    let wal = SizeWatch::start(dir.path().join("readmodels.sqlite-wal"));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (models, done) = (models.clone(), done.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                order_history::list_orders_for_customer(models.as_ref(), "alice", 20, None)
                    .await
                    .expect("read");
                reads += 1;
            }
            reads
        })
    };
    let mut runners = Vec::new();
    for p in all_projections() {
        // Small batches: many commits, each while other projections hold snapshots.
        let runner = ProjectionRunner::new(store.clone(), models.clone(), p, 5);
        runners.push(tokio::spawn(async move {
            while runner.step().await.expect("step") != projections::StepOutcome::Idle {}
        }));
    }
    for r in runners {
        r.await.expect("runner");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let reads = reader.await.expect("reader");
    wal.stop_and_assert_below(20 * 1024 * 1024, "the read-model WAL");
    assert!(
        reads > 10,
        "a reader kept reading during the batches: {reads}"
    );
    let what = "steady batches vs rebuild";
    assert_equals_a_rebuild(&models, store, &all_projections(), &dir, what).await;
}
