//! Durable checkpoints for feed consumers that are not projections (process managers), in a
//! small SQLite file of their own.

use async_trait::async_trait;
use commands::{CheckpointStore, FeedCursor, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

use super::blocking::BlockingConnection;

/// Checkpoints in SQLite. Each `set` is one fsynced transaction: the process managers' steps are
/// idempotent, so at worst a crash replays a few of them.
#[derive(Clone)]
pub struct SqliteCheckpointStore {
    conn: BlockingConnection,
}

fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

impl SqliteCheckpointStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = BlockingConnection::open(
            path,
            "FULL",
            "PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS checkpoints (
                 name TEXT PRIMARY KEY,
                 position INTEGER NOT NULL
             );",
        )
        .map_err(internal)?;
        Ok(Self { conn })
    }

    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.conn.run(move |c| f(c).map_err(internal)).await
    }
}

#[async_trait]
impl CheckpointStore for SqliteCheckpointStore {
    async fn get(&self, name: &str) -> Result<FeedCursor, StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT position FROM checkpoints WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|p| FeedCursor::at(p.unwrap_or(0) as u64))
        })
        .await
    }

    async fn set(&self, name: &str, cursor: &FeedCursor) -> Result<(), StoreError> {
        let name = name.to_string();
        let position = super::embedded_position(cursor).ok_or_else(|| {
            StoreError::Internal(format!(
                "checkpoint {cursor} is not a position of the one-partition embedded feed"
            ))
        })?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO checkpoints(name, position) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET position = MAX(position, excluded.position)",
                params![name, position],
            )
            .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checkpoints_persist_and_never_move_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.sqlite");
        let store = SqliteCheckpointStore::open(&path).unwrap();
        assert_eq!(store.get("pm").await.unwrap(), FeedCursor::start());
        store.set("pm", &FeedCursor::at(10)).await.unwrap();
        store.set("pm", &FeedCursor::at(7)).await.unwrap();
        drop(store);
        let store = SqliteCheckpointStore::open(&path).unwrap();
        assert_eq!(store.get("pm").await.unwrap(), FeedCursor::at(10));
        assert_eq!(store.get("other").await.unwrap(), FeedCursor::start());
    }
}
