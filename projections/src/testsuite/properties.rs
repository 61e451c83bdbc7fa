//! Whole-system properties of the projections over any [`ReadModelStore`] adapter.

use crate::all_projections;
use crate::runner::{rebuild_all, ProjectionRunner, StepOutcome, REBUILD_BATCH};
use crate::store::{Dump, ReadModelStore};
use crate::testsuite::fixtures::{random_batches, scenario, unordered_delivery, Rng};
use crate::testsuite::VecEventStore;
use commands::EventStore;
use std::sync::Arc;

/// Panics with the first differing document when two dumps differ.
pub fn assert_same_dump(left: &Dump, right: &Dump, context: &str) {
    for (key, doc) in left {
        match right.get(key) {
            None => panic!("{context}: {key:?} only on the left: {doc:?}"),
            Some(other) => assert_eq!(doc, other, "{context}: {key:?} differs"),
        }
    }
    for key in right.keys() {
        assert!(
            left.contains_key(key),
            "{context}: {key:?} only on the right"
        );
    }
}

/// For the history of `scenario(seed, steps)`:
/// - `incremental` is built the hard way: every projection receives the events at least once
///   and in any order (shuffled, some twice, random batch sizes) through the gap-filling path,
///   then catches up on the feed with steps of a random page size;
/// - `sequential` is built by feed steps with random page sizes only (the embedded path);
/// - `rebuilt` is built by one rebuild pass over the feed.
///
/// All three must hold exactly the same documents and index entries, and every projection's
/// checkpoint must be the feed head.
pub async fn incremental_equals_rebuild<S, D>(
    incremental: Arc<S>,
    sequential: Arc<S>,
    rebuilt: Arc<S>,
    dump: D,
    seed: u64,
    steps: usize,
) where
    S: ReadModelStore,
    D: Fn(&S) -> Dump,
{
    let store = Arc::new(VecEventStore::with_events(scenario(seed, steps)));
    let feed = store.all();
    let head = store.head().await.expect("head");
    let mut rng = Rng::new(seed ^ 0x5eed_5eed);

    for p in all_projections() {
        let runner = ProjectionRunner::new(
            store.clone(),
            incremental.clone(),
            p.clone(),
            rng.range(1, 64) as usize,
        );
        for batch in unordered_delivery(&feed, &mut rng, 40) {
            runner
                .apply_with_gap_fill(batch)
                .await
                .expect("apply with gap fill");
        }
        while let StepOutcome::Progressed { .. } = runner.step().await.expect("step") {}

        let runner = ProjectionRunner::new(
            store.clone(),
            sequential.clone(),
            p.clone(),
            rng.range(1, 200) as usize,
        );
        while let StepOutcome::Progressed { .. } = runner.step().await.expect("step") {}
        assert_eq!(runner.step().await.expect("step"), StepOutcome::Idle);
    }
    // Random consecutive batches of the feed given to the rebuilt store before the rebuild, so
    // that reset has something to drop.
    for p in all_projections() {
        for batch in random_batches(&feed, &mut rng, 100).into_iter().take(3) {
            let runner = ProjectionRunner::new(store.clone(), rebuilt.clone(), p.clone(), 10);
            runner
                .apply_with_gap_fill(batch)
                .await
                .expect("pre-rebuild apply");
        }
    }
    let summary = rebuild_all(
        store.clone(),
        rebuilt.clone(),
        &all_projections(),
        REBUILD_BATCH,
        |_, _| {},
    )
    .await
    .expect("rebuild");
    assert_eq!(summary.position, head);

    let rebuilt_dump = dump(&rebuilt);
    assert!(
        feed.is_empty() || !rebuilt_dump.is_empty(),
        "the rebuild wrote documents"
    );
    assert_same_dump(&dump(&incremental), &rebuilt_dump, "incremental vs rebuild");
    assert_same_dump(&dump(&sequential), &rebuilt_dump, "sequential vs rebuild");
    for p in all_projections() {
        for models in [&incremental, &sequential, &rebuilt] {
            assert_eq!(
                models.checkpoint(p.name()).await.expect("checkpoint"),
                head,
                "checkpoint of {}",
                p.name()
            );
        }
    }
}
