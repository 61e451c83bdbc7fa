//! A registry of worker health that `/readyz` and `/metrics` read.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerStatus {
    pub healthy: bool,
    /// Whether the worker consumes the feed (projections, process managers). A timer such as
    /// the expiry sweep does not: it has no position, and no lag.
    pub follows_feed: bool,
    /// How many feed events the worker has read, over all partitions (its position on a one-partition feed).
    pub position: u64,
    /// True once the worker has reached the feed head it saw when it started.
    pub caught_up: bool,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// True while a step has been running for longer than the stall limit: the worker is stuck
    /// with work in hand, and the process is not ready.
    pub stalled: bool,
    /// When the step in flight started (none between steps).
    #[serde(skip)]
    busy_since: Option<Instant>,
}

/// Feed head minus the position a worker has reached (by worker).
pub const PROJECTION_LAG_POSITIONS: &str = "backbone_projection_lag_positions";
/// Age of the oldest event a worker has not processed yet, in seconds (by worker).
pub const PROJECTION_LAG_SECONDS: &str = "backbone_projection_lag_seconds";

/// How long one step may run before its worker counts as stalled, by default. A queue
/// consumer's long poll (at most 20 s) and a catch-up page stay well below it.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(120);

/// Shared, cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, WorkerStatus>>>,
    progress: Arc<tokio::sync::Notify>,
    stall_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            progress: Arc::default(),
            stall_after: DEFAULT_STALL_AFTER,
        }
    }
}

impl Health {
    /// A registry whose workers count as stalled once a step runs longer than `stall_after`.
    pub fn with_stall_after(stall_after: Duration) -> Self {
        Self {
            stall_after,
            ..Self::default()
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, WorkerStatus>) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn register(&self, name: &str) {
        self.register_as(name, true);
    }

    /// Registers a worker that does not consume the feed (a timer): it never has a position.
    pub fn register_timer(&self, name: &str) {
        self.register_as(name, false);
    }

    fn register_as(&self, name: &str, follows_feed: bool) {
        self.with(|m| {
            m.entry(name.to_string()).or_insert(WorkerStatus {
                healthy: true,
                follows_feed,
                position: 0,
                caught_up: false,
                last_error: None,
                consecutive_failures: 0,
                stalled: false,
                busy_since: None,
            });
        });
    }

    pub fn progressed(&self, name: &str, position: u64) {
        self.with(|m| {
            if let Some(s) = m.get_mut(name) {
                s.position = s.position.max(position);
                s.healthy = true;
                s.last_error = None;
                s.consecutive_failures = 0;
            }
        });
        self.progress.notify_waiters();
    }

    /// Waits until worker `name` has reached `position`, at most `timeout`. Returns whether it
    /// did (read-your-writes for queries).
    pub async fn wait_for(&self, name: &str, position: u64, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.position(name).unwrap_or(0) >= position {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.position(name).unwrap_or(0) >= position;
            }
        }
    }

    pub fn caught_up(&self, name: &str) {
        self.with(|m| {
            if let Some(s) = m.get_mut(name) {
                s.caught_up = true;
            }
        });
    }

    pub fn failed(&self, name: &str, error: String) {
        self.with(|m| {
            if let Some(s) = m.get_mut(name) {
                s.healthy = false;
                s.last_error = Some(error);
                s.consecutive_failures += 1;
            }
        });
    }

    /// A step of worker `name` starts: from now on it must finish within the stall limit.
    pub fn step_started(&self, name: &str) {
        self.with(|m| {
            if let Some(s) = m.get_mut(name) {
                s.busy_since = Some(Instant::now());
            }
        });
    }

    /// The step of worker `name` ended, whatever its outcome.
    pub fn step_finished(&self, name: &str) {
        self.with(|m| {
            if let Some(s) = m.get_mut(name) {
                s.busy_since = None;
            }
        });
    }

    fn is_stalled(&self, status: &WorkerStatus) -> bool {
        status
            .busy_since
            .is_some_and(|since| since.elapsed() > self.stall_after)
    }

    pub fn snapshot(&self) -> BTreeMap<String, WorkerStatus> {
        self.with(|m| {
            m.iter()
                .map(|(name, status)| {
                    let mut status = status.clone();
                    status.stalled = self.is_stalled(&status);
                    (name.clone(), status)
                })
                .collect()
        })
    }

    pub fn position(&self, name: &str) -> Option<u64> {
        self.with(|m| m.get(name).map(|s| s.position))
    }

    /// Ready when every registered worker is healthy, has caught up once, and is not stuck in a
    /// step.
    pub fn ready(&self) -> bool {
        self.with(|m| {
            m.values()
                .all(|s| s.healthy && s.caught_up && !self.is_stalled(s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_runs_too_long_makes_the_process_unready_until_it_ends() {
        let health = Health::with_stall_after(Duration::from_millis(30));
        health.register("queue:catalog");
        health.caught_up("queue:catalog");
        assert!(health.ready());
        health.step_started("queue:catalog");
        assert!(health.ready(), "a step in flight is fine at first");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!health.ready(), "stuck with work in hand");
        assert!(health.snapshot()["queue:catalog"].stalled);
        health.step_finished("queue:catalog");
        assert!(health.ready());
        assert!(!health.snapshot()["queue:catalog"].stalled);
    }
}
