//! The embedded read-model store: documents and index entries in their own SQLite file
//! (for example `readmodels.sqlite`), separate from the event store.
//!
//! - A batch runs in two phases. The projection work (decoding, applying, encoding) runs against a
//!   snapshot on a reader connection, holding the batch's typed documents (`batch::SqliteBatch`), without
//!   holding the writer, so batches of different projections use both cores. The writes then go
//!   in ONE transaction on the single writer connection with cached prepared statements: a
//!   projection's documents, its applied sequences and its checkpoint commit together.
//! - Optimistic check: every write bumps a per-collection epoch; the write phase verifies that the
//!   epochs of the projection's collections are still those its snapshot saw. Only two batches of
//!   the same projection at once (or an out-of-band `put_doc` racing one) can fail it, and then
//!   the batch fails with a transient error and nothing is written; the runner retries.
//! - Reader connections also serve `get` / `query`, so API reads do not wait behind a batch (WAL
//!   lets readers see the last committed state while the writer works).
//! - `synchronous = NORMAL`: a power loss may drop the last committed batches, but documents and
//!   bookkeeping are in the same transactions and roll back together, and read models are
//!   rebuildable from the event store anyway, so the fsync per commit is not worth its cost.

mod batch;

use async_trait::async_trait;
use batch::{parse_entries, SqliteBatch};
use commands::{FeedCursor, StreamRef};
use projections::store::{
    apply_events, corrupt, ApplyOutcome, DocKey, DocTx, Dump, EncodedDoc, EventBatch, Projection,
    Query, ReadModelError, ReadModelResult, ReadModelStore, StoredDoc,
};
use rusqlite::types::FromSql;
use rusqlite::{
    params, CachedStatement, Connection, ErrorCode, OptionalExtension, Params, TransactionBehavior,
};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Reader connections opened next to the writer for a file-backed store: one per projection
/// batch in flight plus headroom for API reads.
const READERS: usize = 4;

const SCHEMA: &str = "
-- A rowid table: documents are large (hundreds of bytes to kilobytes), which WITHOUT ROWID
-- B-trees handle badly; new documents append at the end and the unique index stays small.
CREATE TABLE IF NOT EXISTS rm_docs (
    id         INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,
    -- The document's index entries as JSON [[index, partition, sort], ...], so that a rewrite
    -- removes exactly the entries it no longer has.
    idx        TEXT NOT NULL,
    UNIQUE (collection, key)
);
CREATE TABLE IF NOT EXISTS rm_index (
    index_name TEXT NOT NULL,
    partition  TEXT NOT NULL,
    sort       TEXT NOT NULL,
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    PRIMARY KEY (index_name, partition, sort, collection, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rm_applied (
    projection TEXT NOT NULL,
    stream     TEXT NOT NULL,
    last_seq   INTEGER NOT NULL,
    PRIMARY KEY (projection, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rm_checkpoints (
    projection TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
-- Bumped by every write to a collection; see the optimistic check in the module docs.
CREATE TABLE IF NOT EXISTS rm_epochs (
    collection TEXT PRIMARY KEY,
    epoch      INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Translates SQLite errors once: a busy or locked database is worth retrying.
pub(crate) fn sql_err(e: rusqlite::Error) -> ReadModelError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            ReadModelError::Unavailable(e.to_string())
        }
        _ => ReadModelError::Internal(e.to_string()),
    }
}

/// `conn`'s cached prepared statement for `sql`.
pub(crate) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
) -> Result<CachedStatement<'c>, ReadModelError> {
    conn.prepare_cached(sql).map_err(sql_err)
}

/// The first column of the row that `sql` selects with `params`, if there is one.
fn select_one<T: FromSql>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Option<T>, ReadModelError> {
    prepare(conn, sql)?
        .query_row(params, |r| r.get(0))
        .optional()
        .map_err(sql_err)
}

/// A stored sequence or position; 0 when there is none (a negative one cannot be written).
fn stored_count(value: Option<i64>) -> u64 {
    value.map_or(0, |v| u64::try_from(v).unwrap_or(0))
}

/// The last sequence of the stream keyed `stream` that `projection` applied (0 when none).
pub(crate) fn read_last_applied(
    conn: &Connection,
    projection: &str,
    stream: &str,
) -> Result<u64, ReadModelError> {
    let sql = "SELECT last_seq FROM rm_applied WHERE projection = ?1 AND stream = ?2";
    let seq = select_one(conn, sql, params![projection, stream])?;
    Ok(stored_count(seq))
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The least time between two WAL restarts (see [`Inner::maybe_restart_wal`]).
const WAL_RESTART_EVERY: Duration = Duration::from_millis(100);

/// Per-connection settings. `wal_autocheckpoint` is raised from 1,000 pages (4 MB) to 8,192
/// (32 MB): a rebuild batch dirties pages all over the B-trees, and copying them back into the
/// database after every few commits costs more than a larger WAL. A WAL that grew past
/// `journal_size_limit` (64 MB) is cut back to it when it restarts. `secure_delete` zeroes what
/// an update or delete frees, so an erased field leaves no bytes in the file ([`ReadModelStore::purge`]
/// then truncates the WAL).
fn configure(conn: &Connection) -> Result<(), ReadModelError> {
    conn.set_prepared_statement_cache_capacity(64);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;
         PRAGMA wal_autocheckpoint = 8192;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA secure_delete = ON;",
    )
    .map_err(sql_err)
}

struct Inner {
    writer: Mutex<Connection>,
    /// Empty for an in-memory store (its data lives in the writer's connection only).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// When the writer last tried to rewind the WAL.
    last_wal_restart: Mutex<Instant>,
}

fn lock(m: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, ReadModelError> {
    // A panic while holding the lock rolls back the open transaction when its guard drops, so
    // the connection itself is still usable; report it rather than recover silently.
    m.lock()
        .map_err(|_| ReadModelError::Internal("read model connection lock poisoned".into()))
}

impl Inner {
    /// A free reader connection if there is one, else the next one in turn (waiting for it).
    fn reader(&self) -> Result<MutexGuard<'_, Connection>, ReadModelError> {
        if self.readers.is_empty() {
            return lock(&self.writer);
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            if let Some(Ok(guard)) = self.readers.get((start + i) % n).map(Mutex::try_lock) {
                return Ok(guard);
            }
        }
        // `start % n` is below `readers.len()`, which is not zero here.
        match self.readers.get(start % n) {
            Some(r) => lock(r),
            None => lock(&self.writer),
        }
    }

    fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        let EventBatch {
            projection,
            events,
            checkpoint,
        } = batch;
        let projection = projection.as_ref();
        let collections = projection.collections();
        if self.readers.is_empty() {
            // In memory: one connection does both phases inside one transaction.
            let mut conn = lock(&self.writer)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let mut batch = SqliteBatch::new(&tx, projection.name());
            let outcome = apply_events(projection, events, &mut batch)?;
            batch.into_writes()?.flush(&tx)?;
            finish(&tx, projection.name(), collections, &outcome, checkpoint)?;
            tx.commit().map_err(sql_err)?;
            return Ok(outcome);
        }

        // Phase 1: the projection work, against a snapshot. On error the read transaction is
        // dropped (rolled back) and nothing was written.
        let (epochs, outcome, writes) = {
            let reader = self.reader()?;
            let snapshot = reader.unchecked_transaction().map_err(sql_err)?;
            let epochs = read_epochs(&snapshot, collections)?;
            let mut batch = SqliteBatch::new(&snapshot, projection.name());
            let outcome = apply_events(projection, events, &mut batch)?;
            (epochs, outcome, batch.into_writes()?)
            // The snapshot ends here, before the writer is taken: a reader waiting for the
            // writer must not keep the WAL from being restarted.
        };

        // Phase 2: the writes, if nobody changed the projection's collections meanwhile.
        let mut conn = lock(&self.writer)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        if read_epochs(&tx, collections)? != epochs {
            return Err(ReadModelError::Unavailable(format!(
                "documents of projection {} changed during the batch; retry",
                projection.name()
            )));
        }
        writes.flush(&tx)?;
        finish(&tx, projection.name(), collections, &outcome, checkpoint)?;
        tx.commit().map_err(sql_err)?;
        self.maybe_restart_wal(&conn);
        Ok(outcome)
    }

    /// After a batch's commit, at most once per [`WAL_RESTART_EVERY`]: rewinds the WAL (see
    /// [`super::wal`]). Projections read and write all the time while events flow, so
    /// without this the WAL grew by ~55 MB/s during the HTTP benchmark's checkouts.
    fn maybe_restart_wal(&self, writer: &Connection) {
        let mut last = match self.last_wal_restart.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.elapsed() < WAL_RESTART_EVERY {
            return;
        }
        *last = Instant::now();
        super::wal::restart_wal(writer, BUSY_TIMEOUT);
    }
}

fn read_epochs(conn: &Connection, collections: &[&str]) -> Result<Vec<i64>, ReadModelError> {
    let sql = "SELECT epoch FROM rm_epochs WHERE collection = ?1";
    collections
        .iter()
        .map(|c| Ok(select_one(conn, sql, params![c])?.unwrap_or(0)))
        .collect()
}

fn bump_epochs<S: AsRef<str>>(conn: &Connection, collections: &[S]) -> Result<(), ReadModelError> {
    let mut stmt = prepare(
        conn,
        "INSERT INTO rm_epochs (collection, epoch) VALUES (?1, 1)
         ON CONFLICT (collection) DO UPDATE SET epoch = epoch + 1",
    )?;
    for c in collections {
        stmt.execute(params![c.as_ref()]).map_err(sql_err)?;
    }
    Ok(())
}

/// The bookkeeping of a batch's write phase: epochs, and the checkpoint when the whole batch
/// was consumed.
fn finish(
    tx: &Connection,
    projection: &str,
    collections: &[&str],
    outcome: &ApplyOutcome,
    checkpoint: Option<FeedCursor>,
) -> Result<(), ReadModelError> {
    bump_epochs(tx, collections)?;
    if let (ApplyOutcome::Applied { .. }, Some(position)) = (outcome, checkpoint) {
        let position = super::embedded_position(&position).ok_or_else(|| {
            ReadModelError::Internal(format!(
                "checkpoint {position} is not a position of the one-partition embedded feed"
            ))
        })?;
        prepare(
            tx,
            "INSERT INTO rm_checkpoints (projection, position) VALUES (?1, ?2)
             ON CONFLICT (projection) DO UPDATE
             SET position = MAX(position, excluded.position)",
        )?
        .execute(params![projection, position])
        .map_err(sql_err)?;
    }
    Ok(())
}

/// The SQLite adapter of the read-model port.
#[derive(Clone)]
pub struct SqliteReadModelStore {
    inner: Arc<Inner>,
}

impl SqliteReadModelStore {
    /// Opens (creating if needed) the read-model file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadModelError> {
        let path = path.as_ref();
        let writer = Connection::open(path).map_err(sql_err)?;
        // WAL is a property of the file; set it once from the writer before readers open it.
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "read model database is not in WAL mode");
        }
        configure(&writer)?;
        writer.execute_batch(SCHEMA).map_err(sql_err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path).map_err(sql_err)?;
            configure(&reader)?;
            reader
                .execute_batch("PRAGMA query_only = ON;")
                .map_err(sql_err)?;
            readers.push(Mutex::new(reader));
        }
        Ok(Self::from_parts(writer, readers))
    }

    /// A store in memory (tests, benchmarks): one connection for everything.
    pub fn open_in_memory() -> Result<Self, ReadModelError> {
        let conn = Connection::open_in_memory().map_err(sql_err)?;
        configure(&conn)?;
        conn.execute_batch(SCHEMA).map_err(sql_err)?;
        Ok(Self::from_parts(conn, Vec::new()))
    }

    fn from_parts(writer: Connection, readers: Vec<Mutex<Connection>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                last_wal_restart: Mutex::new(Instant::now()),
            }),
        }
    }

    /// Runs `f` on a blocking thread: every SQLite call blocks.
    async fn blocking<R, F>(&self, f: F) -> Result<R, ReadModelError>
    where
        R: Send + 'static,
        F: FnOnce(&Inner) -> Result<R, ReadModelError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| ReadModelError::Internal(format!("read model task failed: {e}")))?
    }

    async fn with_writer<R, F>(&self, f: F) -> Result<R, ReadModelError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, ReadModelError> + Send + 'static,
    {
        self.blocking(move |inner| f(&mut *lock(&inner.writer)?))
            .await
    }

    async fn with_reader<R, F>(&self, f: F) -> Result<R, ReadModelError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, ReadModelError> + Send + 'static,
    {
        self.blocking(move |inner| f(&*inner.reader()?)).await
    }

    /// Every document with its index entries (tests compare whole stores with it).
    pub fn dump(&self) -> Result<Dump, ReadModelError> {
        let conn = self.inner.reader()?;
        let mut stmt = conn
            .prepare("SELECT collection, key, body, idx FROM rm_docs")
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(sql_err)?;
        let mut dump = Dump::new();
        for row in rows {
            let (collection, key, body, idx) = row.map_err(sql_err)?;
            let body: Value =
                serde_json::from_str(&body).map_err(|e| corrupt(&collection, &key, e))?;
            let index = parse_entries(&collection, &key, &idx)?
                .into_iter()
                .collect();
            dump.insert((collection, key), StoredDoc { body, index });
        }
        Ok(dump)
    }
}

fn query_sql(from: bool, to: bool, descending: bool) -> String {
    let dir = if descending { "DESC" } else { "ASC" };
    format!(
        "SELECT d.body FROM rm_index i
         JOIN rm_docs d ON d.collection = i.collection AND d.key = i.key
         WHERE i.index_name = ?1 AND i.partition = ?2{}{}
         ORDER BY i.sort {dir}, i.collection {dir}, i.key {dir}
         LIMIT ?5",
        if from { " AND i.sort >= ?3" } else { "" },
        if to { " AND i.sort <= ?4" } else { "" },
    )
}

#[async_trait]
impl ReadModelStore for SqliteReadModelStore {
    #[tracing::instrument(skip_all, fields(projection = batch.projection.name(), events = batch.events.len()), err)]
    async fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        self.blocking(move |inner| inner.apply_batch(batch)).await
    }

    async fn checkpoint(&self, projection: &str) -> ReadModelResult<FeedCursor> {
        let projection = projection.to_owned();
        self.with_reader(move |conn| {
            let sql = "SELECT position FROM rm_checkpoints WHERE projection = ?1";
            let position = select_one(conn, sql, params![projection])?;
            Ok(FeedCursor::at(stored_count(position)))
        })
        .await
    }

    async fn last_applied(&self, projection: &str, stream: &StreamRef) -> ReadModelResult<u64> {
        let projection = projection.to_owned();
        let stream = stream.key();
        self.with_reader(move |conn| read_last_applied(conn, &projection, &stream))
            .await
    }

    async fn get(&self, collection: &str, key: &str) -> ReadModelResult<Option<Value>> {
        let collection = collection.to_owned();
        let key = key.to_owned();
        self.with_reader(move |conn| {
            let sql = "SELECT body FROM rm_docs WHERE collection = ?1 AND key = ?2";
            let body: Option<String> = select_one(conn, sql, params![collection, key])?;
            body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt(&collection, &key, e)))
                .transpose()
        })
        .await
    }

    async fn query(&self, query: Query<'_>) -> ReadModelResult<Vec<Value>> {
        let index = query.index.to_owned();
        let partition = query.partition.to_owned();
        let from = query.from.map(str::to_owned);
        let to = query.to.map(str::to_owned);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let descending = query.descending;
        self.with_reader(move |conn| {
            let sql = query_sql(from.is_some(), to.is_some(), descending);
            let mut stmt = prepare(conn, &sql)?;
            // Unused placeholders are bound anyway (to NULL), so every variant takes the same
            // parameter list.
            let rows = stmt
                .query_map(params![index, partition, from, to, limit], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(sql_err)?;
            let mut docs = Vec::new();
            for row in rows {
                let body = row.map_err(sql_err)?;
                docs.push(serde_json::from_str(&body).map_err(|e| corrupt(&index, &partition, e))?);
            }
            Ok(docs)
        })
        .await
    }

    async fn put_doc(&self, at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<()> {
        let (collection, key) = at.owned();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let mut batch = SqliteBatch::new(&tx, "");
            DocTx::put(&mut batch, DocKey::new(&collection, &key), Box::new(doc))?;
            batch.into_writes()?.flush(&tx)?;
            bump_epochs(&tx, &[collection.as_str()])?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(projection = projection.name()), err)]
    async fn reset(&self, projection: &dyn Projection) -> ReadModelResult<()> {
        let name = projection.name().to_owned();
        let collections: Vec<String> = projection
            .collections()
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            for collection in &collections {
                tx.execute(
                    "DELETE FROM rm_index WHERE collection = ?1",
                    params![collection],
                )
                .map_err(sql_err)?;
                tx.execute(
                    "DELETE FROM rm_docs WHERE collection = ?1",
                    params![collection],
                )
                .map_err(sql_err)?;
            }
            tx.execute(
                "DELETE FROM rm_applied WHERE projection = ?1",
                params![name],
            )
            .map_err(sql_err)?;
            tx.execute(
                "DELETE FROM rm_checkpoints WHERE projection = ?1",
                params![name],
            )
            .map_err(sql_err)?;
            bump_epochs(&tx, &collections)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    /// `secure_delete` already zeroed what the erasing batch freed in the file; this copies the
    /// WAL into the file and truncates it, so no older page image is left either.
    async fn purge(&self) -> ReadModelResult<()> {
        self.with_writer(|conn| match super::wal::truncate_wal(conn) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReadModelError::Unavailable(
                "readers kept the read models' WAL from being truncated".into(),
            )),
            Err(e) => Err(sql_err(e)),
        })
        .await
    }
}
