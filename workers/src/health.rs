//! A registry of worker health that `/readyz` and `/metrics` read.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerStatus {
    pub healthy: bool,
    /// Whether the worker consumes the feed (projections, process managers). A timer such as
    /// the expiry sweep does not: it has no position, and no lag.
    pub follows_feed: bool,
    /// The feed position the worker has reached.
    pub position: u64,
    /// True once the worker has reached the feed head it saw when it started.
    pub caught_up: bool,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, WorkerStatus>>>,
    progress: Arc<tokio::sync::Notify>,
}

impl Health {
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

    pub fn snapshot(&self) -> BTreeMap<String, WorkerStatus> {
        self.with(|m| m.clone())
    }

    pub fn position(&self, name: &str) -> Option<u64> {
        self.with(|m| m.get(name).map(|s| s.position))
    }

    /// Ready when every registered worker is healthy and has caught up once.
    pub fn ready(&self) -> bool {
        self.with(|m| m.values().all(|s| s.healthy && s.caught_up))
    }
}
