//! The customers' data keys in SQLite: the embedded [`KeyStore`].
//!
//! The table lives in the event store's own file, on a connection of its own. A new key is
//! committed with `synchronous=NORMAL` (no fsync of its own) before the event it seals is handed
//! to the event store, whose commit is fsynced: in WAL mode that sync covers every frame before
//! it, so an acknowledged event never names a key that a crash lost, and checkouts by new
//! customers pay no second fsync.
//!
//! Erasing overwrites the key with `secure_delete` on and then truncates the WAL, so the key's
//! bytes are left neither in the database file nor in its WAL.

use async_trait::async_trait;
use commands::{CustomerKeys, DataKey, KeyStore, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

use super::blocking::BlockingConnection;

/// The busy handler of the key connection. The event store's writer holds the write lock while
/// it fsyncs a group commit (a fraction of a millisecond), so a new key waits in steps of 20 µs
/// for the first 50 ms, then of 1 ms, 5 s in all. (SQLite's default handler sleeps whole
/// milliseconds from the first retry on, which made a new customer's key cost more than their
/// checkout.)
fn short_waits(attempt: i32) -> bool {
    const SHORT: i32 = 2_500;
    const LONG: i32 = 5_000;
    match attempt {
        a if a < SHORT => std::thread::sleep(std::time::Duration::from_micros(20)),
        a if a < SHORT + LONG => std::thread::sleep(std::time::Duration::from_millis(1)),
        _ => return false,
    }
    true
}

#[derive(Clone)]
pub struct SqliteKeyStore {
    conn: BlockingConnection,
}

fn internal(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
            StoreError::Unavailable("the key store is busy".into())
        }
        other => StoreError::Internal(other.to_string()),
    }
}

type Row = (Option<String>, Option<Vec<u8>>, bool);

fn read_row(conn: &Connection, customer: &str) -> Result<Option<Row>, rusqlite::Error> {
    conn.query_row(
        "SELECT key_id, material, erased_at IS NOT NULL FROM data_keys WHERE customer = ?1",
        params![customer],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

fn to_keys(row: Option<Row>) -> Result<CustomerKeys, StoreError> {
    let Some((id, material, erased)) = row else {
        return Ok(CustomerKeys::default());
    };
    let key = match (id, material) {
        (Some(id), Some(material)) => {
            let material: [u8; 32] = material
                .try_into()
                .map_err(|_| StoreError::Internal(format!("data key {id} is not 32 bytes")))?;
            Some(DataKey::new(id, material))
        }
        _ => None,
    };
    Ok(CustomerKeys { key, erased })
}

impl SqliteKeyStore {
    /// Opens (creating when missing) the key table in the SQLite file at `path`, normally the
    /// event store's file. Blocking: call it at startup or inside `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = BlockingConnection::open(
            path,
            "NORMAL",
            "PRAGMA secure_delete=ON;
             CREATE TABLE IF NOT EXISTS data_keys (
                 customer TEXT PRIMARY KEY,
                 key_id TEXT,
                 material BLOB,
                 erased_at TEXT
             );",
        )
        .map_err(internal)?;
        conn.configure(|c| c.busy_handler(Some(short_waits)))
            .map_err(internal)?;
        Ok(Self { conn })
    }
}

/// Truncates the WAL after an erasure, or fails (the caller retries the erasure).
fn truncate_wal(conn: &Connection) -> Result<(), StoreError> {
    if super::wal::truncate_wal(conn).map_err(internal)? {
        return Ok(());
    }
    Err(StoreError::Unavailable(
        "readers kept the WAL from being truncated after an erasure".into(),
    ))
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn key_for(&self, customer: &str) -> Result<DataKey, StoreError> {
        let customer = customer.to_owned();
        let fresh = DataKey::generate()?;
        self.conn
            .run(move |c| {
                // Sets the key unless one exists (a tombstone of an erasure has none): concurrent
                // callers all read back the one that won.
                c.execute(
                    "INSERT INTO data_keys(customer, key_id, material) VALUES (?1, ?2, ?3)
                 ON CONFLICT(customer) DO UPDATE SET key_id = excluded.key_id,
                     material = excluded.material
                 WHERE data_keys.key_id IS NULL",
                    params![customer, fresh.id(), &fresh.material()[..]],
                )
                .map_err(internal)?;
                to_keys(read_row(c, &customer).map_err(internal)?)?
                    .key
                    .ok_or_else(|| StoreError::Internal("a data key vanished as it was set".into()))
            })
            .await
    }

    async fn lookup(&self, customer: &str) -> Result<CustomerKeys, StoreError> {
        let customer = customer.to_owned();
        self.conn
            .run(move |c| to_keys(read_row(c, &customer).map_err(internal)?))
            .await
    }

    async fn erase(&self, customer: &str) -> Result<(), StoreError> {
        let customer = customer.to_owned();
        let at = chrono::Utc::now().to_rfc3339();
        self.conn
            .run(move |c| {
                c.execute(
                    "INSERT INTO data_keys(customer, erased_at) VALUES (?1, ?2)
                 ON CONFLICT(customer) DO UPDATE SET key_id = NULL, material = NULL,
                     erased_at = excluded.erased_at",
                    params![customer, at],
                )
                .map_err(internal)?;
                truncate_wal(c)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_key_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SqliteKeyStore::open(&dir.path().join("events.db")).unwrap();
        commands::conformance::key_store_contract(std::sync::Arc::new(keys)).await;
    }

    /// Neither the database file nor its WAL holds an erased key's bytes, and keys survive a
    /// reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_erased_key_leaves_no_bytes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let keys = SqliteKeyStore::open(&path).unwrap();
        let kept = keys.key_for("kept").await.unwrap();
        let gone = keys.key_for("gone").await.unwrap();
        let contains = |needle: &[u8]| {
            std::fs::read_dir(dir.path()).unwrap().any(|f| {
                let bytes = std::fs::read(f.unwrap().path()).unwrap();
                bytes.windows(needle.len()).any(|w| w == needle)
            })
        };
        assert!(contains(gone.material()), "the test can see a key's bytes");
        keys.erase("gone").await.unwrap();
        assert!(
            !contains(gone.material()),
            "the erased key is gone from every file"
        );
        assert!(contains(kept.material()));
        drop(keys);
        let keys = SqliteKeyStore::open(&path).unwrap();
        let again = keys.lookup("kept").await.unwrap();
        assert_eq!(again.key.unwrap().material(), kept.material());
        assert!(keys.lookup("gone").await.unwrap().erased);
    }
}
