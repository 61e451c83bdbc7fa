//! What the read-model suites share: a simulated shop history to project, and rebuilds of
//! projections from a history. Include it with `#[path = "support/history.rs"] mod history;`.
// Each suite uses part of it.
#![allow(dead_code)]

use commands::EventStore;
use projections::testsuite::fixtures::Simulator;
use projections::testsuite::VecEventStore;
use projections::{all_projections, rebuild_all, Projection, ReadModelStore};
use std::sync::Arc;

/// The events of a simulated shop: `steps` steps of the simulator seeded with `seed`.
pub fn simulated_history(seed: u64, steps: usize) -> Arc<VecEventStore> {
    let mut sim = Simulator::new(seed);
    sim.run(steps);
    Arc::new(VecEventStore::with_events(sim.into_events()))
}

/// Rebuilds `projections` from `events` into `models`, `batch` events at a time; `what` names
/// the rebuild when it fails.
pub async fn rebuild(
    events: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    projections: &[Arc<dyn Projection>],
    batch: usize,
    what: &str,
) {
    rebuild_all(events, models, projections, batch, |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// [`rebuild`] of every projection.
pub async fn rebuild_every_projection(
    events: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    batch: usize,
    what: &str,
) {
    rebuild(events, models, &all_projections(), batch, what).await;
}
