//! One SQLite connection shared by a small adapter (the process managers' checkpoints, the
//! customers' keys) and used on tokio's blocking threads.

use commands::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A connection behind a mutex. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BlockingConnection(Arc<Mutex<Connection>>);

impl BlockingConnection {
    /// Opens (creating when missing) the file at `path` in WAL mode with `synchronous` (`FULL`
    /// or `NORMAL`), then runs `setup`: further pragmas and the adapter's tables.
    pub fn open(path: &Path, synchronous: &str, setup: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; {setup}"
        ))?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    /// Runs `f` with the connection, synchronously: for setup at open.
    pub fn configure<R>(&self, f: impl FnOnce(&Connection) -> R) -> R {
        f(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let conn = self.clone();
        // The connection holds no invariant a panicking holder could break mid-way.
        tokio::task::spawn_blocking(move || conn.configure(f))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}
