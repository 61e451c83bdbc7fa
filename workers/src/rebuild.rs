//! Rebuilding one projection inside a running server.
//!
//! [`Rebuilds`] knows the runners of the projections this process runs. Starting a rebuild
//! spawns a task that calls [`ProjectionRunner::rebuild`]: the runner's own worker waits for
//! its current step, stays held while the read model is dropped and replayed from position 0,
//! and then carries on from the rebuilt checkpoint. Other projections keep running throughout.
//! At most one rebuild per projection runs at a time.

use crate::health::Health;
use chrono::{DateTime, Utc};
use projections::runner::ProjectionRunner;
use projections::Generations;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a projection's latest rebuild stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RebuildState {
    Running,
    Done,
    Failed,
}

/// The latest rebuild of one projection since the process started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RebuildStatus {
    pub projection: String,
    pub state: RebuildState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many feed events were replayed so far, over all partitions (the final checkpoint once done, on a one-partition feed).
    pub position: u64,
    /// The feed head the rebuild replays up to.
    pub head: u64,
    /// Feed events read and events applied to the read model.
    pub events: u64,
    pub applied: u64,
    /// Feed positions replayed per second so far (while running) or overall (once done).
    pub per_second: Option<f64>,
    /// Seconds left at that pace, while running.
    pub eta_seconds: Option<f64>,
    /// Why it failed (the projection's worker is left to retry from its checkpoint).
    pub error: Option<String>,
}

/// Why a rebuild did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    #[error("unknown projection {0:?}")]
    Unknown(String),
    #[error("projection {0} is already being rebuilt")]
    AlreadyRunning(String),
}

/// The projections a server runs, and their rebuilds.
#[derive(Default)]
pub struct Rebuilds {
    runners: BTreeMap<&'static str, Arc<ProjectionRunner>>,
    /// Where rebuilds build their new generation (blue/green); in place without.
    generations: Option<Arc<dyn Generations>>,
    status: Mutex<BTreeMap<&'static str, RebuildStatus>>,
    health: Health,
}

impl Rebuilds {
    pub fn new(health: Health) -> Self {
        Self {
            health,
            ..Self::default()
        }
    }

    /// Rebuilds blue/green in `generations`: the runners' read models must be the
    /// [`projections::GenerationRouter`] that `generations` switches.
    pub fn with_generations(mut self, generations: Arc<dyn Generations>) -> Self {
        self.generations = Some(generations);
        self
    }

    /// Adds the runner of a projection (the same `Arc` its worker steps).
    pub fn add(&mut self, runner: Arc<ProjectionRunner>) {
        self.runners.insert(runner.name(), runner);
    }

    /// The projections, by name.
    pub fn names(&self) -> Vec<&'static str> {
        self.runners.keys().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, RebuildStatus>> {
        // Status records only; a panicking holder cannot leave one half-written.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest rebuild of `projection`, if one was started since the process began, with
    /// its pace and, while it runs, the time left.
    pub fn status(&self, projection: &str) -> Option<RebuildStatus> {
        let mut status = self.lock().get(projection).cloned()?;
        let until = status.finished_at.unwrap_or_else(Utc::now);
        let seconds = (until - status.started_at).num_milliseconds() as f64 / 1000.0;
        if seconds > 0.0 && status.position > 0 {
            let pace = status.position as f64 / seconds;
            status.per_second = Some(pace);
            status.eta_seconds = (status.state == RebuildState::Running)
                .then(|| status.head.saturating_sub(status.position) as f64 / pace);
        }
        Some(status)
    }

    /// Starts rebuilding each projection whose code is newer than its stored read model (the
    /// old generation serves until the new one has caught up).
    pub fn start_outdated(self: &Arc<Self>, outdated: &[&'static str]) {
        for name in outdated {
            tracing::info!(projection = name, "projection version changed, rebuilding");
            if let Err(err) = self.start(name) {
                tracing::warn!(projection = name, error = %err, "version rebuild not started");
            }
        }
    }

    /// Starts rebuilding `projection` in the background; returns its initial status.
    pub fn start(self: &Arc<Self>, projection: &str) -> Result<RebuildStatus, RebuildError> {
        let (&name, runner) = self
            .runners
            .get_key_value(projection)
            .ok_or_else(|| RebuildError::Unknown(projection.to_string()))?;
        let runner = runner.clone();
        let initial = {
            let mut status = self.lock();
            if status
                .get(name)
                .is_some_and(|s| s.state == RebuildState::Running)
            {
                return Err(RebuildError::AlreadyRunning(name.to_string()));
            }
            let initial = RebuildStatus {
                projection: name.to_string(),
                state: RebuildState::Running,
                started_at: Utc::now(),
                finished_at: None,
                position: 0,
                head: 0,
                events: 0,
                applied: 0,
                per_second: None,
                eta_seconds: None,
                error: None,
            };
            status.insert(name, initial.clone());
            initial
        };
        tracing::info!(projection = name, "projection rebuild requested");
        let me = self.clone();
        tokio::spawn(async move {
            let progress = |position: u64, head: u64| {
                if let Some(s) = me.lock().get_mut(name) {
                    s.position = position;
                    s.head = head;
                }
            };
            let outcome = match &me.generations {
                Some(generations) => {
                    runner
                        .rebuild_blue_green(generations.as_ref(), progress)
                        .await
                }
                None => runner.rebuild(progress).await,
            };
            let mut status = me.lock();
            let Some(s) = status.get_mut(name) else {
                return;
            };
            s.finished_at = Some(Utc::now());
            match outcome {
                Ok(summary) => {
                    s.state = RebuildState::Done;
                    s.position = summary.position.count();
                    s.head = s.head.max(s.position);
                    s.events = summary.events;
                    s.applied = summary.applied as u64;
                    me.health
                        .progressed(&crate::projection_worker(name), s.position);
                    tracing::info!(
                        projection = name,
                        events = summary.events,
                        position = %summary.position,
                        "projection rebuilt"
                    );
                }
                Err(err) => {
                    s.state = RebuildState::Failed;
                    s.error = Some(err.to_string());
                    tracing::error!(projection = name, error = %err, "projection rebuild failed");
                }
            }
        });
        Ok(initial)
    }
}
