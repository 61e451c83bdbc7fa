//! [`SqliteEventStore`]: the embedded [`EventStore`].

use super::codec::{optional_row, sql_error, to_sql_int, Decoder, EVENT_COLUMNS};
use super::migrations;
use super::recent::RecentFeed;
use super::writer::{self, Encoded, GroupConfig, Published, WriteRequest};
use async_trait::async_trait;
use commands::FeedCursor;
use commands::{
    validate_commit, AppendOutcome, Commit, CommitResult, EventEnvelope, EventStore, FeedFilter,
    FilteredPage, Idempotency, LoadedStream, Snapshot, StoreError, StreamRef, MAX_COMMIT_ACTIONS,
};
use rusqlite::{params, Connection, OpenFlags};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

/// Bytes a reset WAL file is truncated back to, so one burst does not keep a huge file around.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The smallest feed range worth its own connection and thread.
const MIN_FEED_PART: usize = 256;

/// How the write connection syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `PRAGMA synchronous=FULL`: the WAL is fsynced at every (group) commit, so an acknowledged
    /// commit survives a power loss or OS crash. The default.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL`: the WAL is synced only at checkpoints. WEAKER: the database
    /// stays consistent, and a process crash loses nothing, but a power loss or OS crash may lose
    /// the most recent acknowledged commits. Choose it only when that is acceptable (tests,
    /// disposable demos) and the extra throughput matters.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Options for [`SqliteEventStore::open`]. `SqliteOptions::default()` is the durable setup.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of acknowledged commits; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// Read connections kept open for `load`, `read`, `feed` and `idempotency`; more concurrent
    /// reads wait for one of them.
    pub read_connections: usize,
    /// The most commits the writer puts in one transaction (one fsync).
    pub max_group_commits: usize,
    /// How long the writer may wait for concurrent writers to join a group. It only waits when
    /// the previous group held several commits, and only until as many have arrived again.
    pub group_linger: Duration,
    /// The least time between two background WAL checkpoints.
    pub checkpoint_interval: Duration,
    /// Bytes of the database file each read connection maps into memory (`PRAGMA mmap_size`);
    /// 0 reads through the page cache only.
    pub mmap_size: u64,
    /// Appends waiting for the writer beyond this make `append` wait (back-pressure).
    pub queue_capacity: usize,
    /// How long a connection waits for a lock held by another connection or process before the
    /// operation fails with `Unavailable`.
    pub busy_timeout: Duration,
    /// How many of the newest committed events `feed` serves from memory instead of SQLite
    /// (0: always read SQLite). Tailing consumers read only the newest events.
    pub recent_events: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            read_connections: 4,
            max_group_commits: 256,
            group_linger: Duration::from_micros(500),
            checkpoint_interval: Duration::from_millis(50),
            mmap_size: 1 << 30,
            queue_capacity: 4096,
            busy_timeout: Duration::from_secs(5),
            recent_events: 16_384,
        }
    }
}

/// The embedded event store: one SQLite file in WAL mode, one writer thread with group commit,
/// and a small pool of read connections.
///
/// - `global_position` is the `events` rowid: the feed order, set on every read path.
/// - `append` never blocks the async runtime: it queues the commit for the writer thread and
///   awaits the answer. Reads run on `spawn_blocking` with a pooled connection.
/// - [`EventStore::commit_notifier`] fires after every group commit, once [`EventStore::head`]
///   (an atomic, no I/O) already shows the new position; [`SqliteEventStore::head_watch`] offers
///   the same as a value that cannot be missed.
///
/// One process owns the file: `head()` and the notifier only see commits made through this
/// value. Dropping it waits for queued commits to finish and stops the writer thread.
pub struct SqliteEventStore {
    readers: Arc<ReadPool>,
    /// How many ranges a large feed page is split into.
    feed_parallelism: usize,
    /// One permit per pooled read connection.
    read_slots: Arc<Semaphore>,
    published: Arc<Published>,
    queue: Option<mpsc::Sender<WriteRequest>>,
    slots: Arc<Semaphore>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

/// Counters of the writer since open: `commits / groups` is the average group size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions (so fsyncs under FULL) the writer committed.
    pub groups: u64,
    /// Append requests it handled, whatever their outcome.
    pub commits: u64,
    /// Times the writer rewound the WAL to its start after a checkpoint had caught up.
    pub wal_restarts: u64,
}

impl std::fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.readers.path)
            .field("head", &self.published.head.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Opens (creating if needed) the store at `path`, switches it to WAL, applies the embedded
    /// migrations and starts the writer thread. This does blocking file I/O: call it at startup
    /// or inside `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path, &options)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(format!(
                "sqlite refused WAL mode for {} (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())
            .map_err(sql_error)?;
        // Checkpoints run on the checkpointer thread. This backstop only matters if that thread
        // cannot keep up (for example, readers pinning old WAL frames for a long time).
        conn.pragma_update(None, "wal_autocheckpoint", 100_000)
            .map_err(sql_error)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(sql_error)?;
        let version = migrations::migrate(&mut conn)?;
        let checkpoint_conn = open_connection(&path, &options)?;
        checkpoint_conn
            .pragma_update(None, "synchronous", options.synchronous.pragma())
            .map_err(sql_error)?;
        checkpoint_conn
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(sql_error)?;
        let head: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(global_position), 0) FROM events",
                [],
                |row| row.get(0),
            )
            .map_err(sql_error)?;
        let head = u64::try_from(head).unwrap_or(0);

        let (head_watch, _) = watch::channel(head);
        let published = Arc::new(Published {
            head: AtomicU64::new(head),
            head_watch,
            notify: Arc::new(Notify::new()),
            groups: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            wal_restarts: AtomicU64::new(0),
            wal_caught_up: AtomicBool::new(false),
            recent: RecentFeed::new(options.recent_events, head),
        });
        let (checkpoint_tx, checkpoint_rx) = mpsc::sync_channel(1);
        let interval = options.checkpoint_interval;
        let for_checkpointer = published.clone();
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || {
                writer::run_checkpointer(checkpoint_conn, checkpoint_rx, interval, for_checkpointer)
            })
            .map_err(|e| StoreError::Internal(format!("spawning the sqlite checkpointer: {e}")))?;
        let (queue, rx) = mpsc::channel();
        let writer = {
            let published = published.clone();
            let config = GroupConfig {
                max_group: options.max_group_commits,
                linger: options.group_linger,
                busy_timeout: options.busy_timeout,
            };
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer::run(conn, rx, published, config, checkpoint_tx))
                .map_err(|e| StoreError::Internal(format!("spawning the sqlite writer: {e}")))?
        };
        tracing::info!(
            path = %path.display(),
            schema_version = version,
            head,
            synchronous = options.synchronous.pragma(),
            "opened sqlite event store"
        );
        let feed_parallelism = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(options.read_connections.max(1));
        Ok(Self {
            feed_parallelism,
            read_slots: Arc::new(Semaphore::new(
                options.read_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            slots: Arc::new(Semaphore::new(
                options.queue_capacity.clamp(1, Semaphore::MAX_PERMITS),
            )),
            readers: Arc::new(ReadPool {
                path,
                options,
                idle: Mutex::new(Vec::new()),
            }),
            published,
            queue: Some(queue),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
        })
    }

    /// The feed head as a watch: `changed()` resolves after any commit that moved it, even one
    /// that happened between two polls.
    pub fn head_watch(&self) -> watch::Receiver<u64> {
        self.published.head_watch.subscribe()
    }

    /// Group-commit counters since open.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            groups: self.published.groups.load(Ordering::Relaxed),
            commits: self.published.commits.load(Ordering::Relaxed),
            wal_restarts: self.published.wal_restarts.load(Ordering::Relaxed),
        }
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.readers.path
    }

    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // At most `read_connections` reads at once: more would only open and close extra
        // connections (a schema parse and a memory map each) to wait on the same two cores.
        let _permit = self.reader_permits(1).await?;
        join_reader(self.spawn_reader(f)).await
    }

    async fn reader_permits(&self, n: usize) -> Result<OwnedSemaphorePermit, StoreError> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.read_slots
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| StoreError::Internal("sqlite read pool is closed".into()))
    }

    /// Runs `f` with a pooled read connection on the blocking pool, starting now.
    fn spawn_reader<T, F>(&self, f: F) -> tokio::task::JoinHandle<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.run(f))
    }
}

impl Drop for SqliteEventStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain what is queued and exit; joining makes a
        // reopen right after the drop see every acknowledged commit with the file released.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the sqlite writer thread panicked");
            }
        }
        // The writer's exit closed the checkpointer's channel; it checkpoints once more and stops.
        if let Some(checkpointer) = self.checkpointer.take() {
            if checkpointer.join().is_err() {
                tracing::error!("the sqlite checkpointer thread panicked");
            }
        }
    }
}

async fn join_reader<T>(
    task: tokio::task::JoinHandle<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    task.await
        .map_err(|e| StoreError::Internal(format!("sqlite read task failed: {e}")))?
}

fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error)?;
    conn.busy_timeout(options.busy_timeout).map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Read connections, reused across `spawn_blocking` calls.
struct ReadPool {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn run<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            // A panic while holding the lock cannot leave the Vec half-updated; keep using it.
            Err(poisoned) => poisoned.into_inner().pop(),
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path, &self.options)?;
                // Readers never write; this turns a stray write into an error.
                conn.pragma_update(None, "query_only", true)
                    .map_err(sql_error)?;
                // Feed scans read large ranges: mapping the file saves a read() per page.
                conn.pragma_update(None, "mmap_size", to_sql_int(self.options.mmap_size))
                    .map_err(sql_error)?;
                conn
            }
        };
        let result = f(&mut conn);
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < self.options.read_connections && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }
}

fn read_range(
    conn: &Connection,
    stream: &StreamRef,
    versions: RangeInclusive<u64>,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream_type = ?1 AND stream_id = ?2 AND sequence >= ?3 AND sequence <= ?4 \
             ORDER BY sequence"
        ))
        .map_err(sql_error)?;
    let mut rows = stmt
        .query(params![
            stream.stream_type.as_str(),
            stream.stream_id,
            to_sql_int(*versions.start()),
            to_sql_int(*versions.end())
        ])
        .map_err(sql_error)?;
    let mut decoder = Decoder::default();
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        events.push(decoder.decode(row, Some(stream))?);
    }
    Ok(events)
}

fn load_stream(conn: &mut Connection, stream: &StreamRef) -> Result<LoadedStream, StoreError> {
    // One read transaction: the snapshot and the events after it come from the same state.
    let tx = conn.transaction().map_err(sql_error)?;
    let snapshot: Option<(i64, u32, String)> = optional_row(
        &tx,
        "SELECT version, schema_version, state FROM snapshots \
         WHERE stream_type = ?1 AND stream_id = ?2",
        params![stream.stream_type.as_str(), stream.stream_id],
    )?;
    let snapshot = match snapshot {
        None => None,
        Some((version, schema_version, state)) => Some(Snapshot {
            version: u64::try_from(version)
                .map_err(|e| StoreError::Internal(format!("undecodable snapshot version: {e}")))?,
            schema_version,
            state: serde_json::from_str(&state)
                .map_err(|e| StoreError::Internal(format!("undecodable snapshot: {e}")))?,
        }),
    };
    let after = snapshot.as_ref().map_or(0, |s| s.version);
    let events = read_range(&tx, stream, after.saturating_add(1)..=u64::MAX)?;
    tx.finish().map_err(sql_error)?;
    let version = events.last().map_or(after, |e| e.sequence);
    Ok(LoadedStream {
        snapshot,
        events,
        version,
    })
}

/// The first `limit` events with `after < global_position <= upto`, in position order.
fn feed_page(
    conn: &Connection,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE global_position > ?1 AND global_position <= ?2 \
             ORDER BY global_position LIMIT ?3"
        ))
        .map_err(sql_error)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt
        .query(params![to_sql_int(after), to_sql_int(upto), limit])
        .map_err(sql_error)?;
    let mut decoder = Decoder::default();
    let mut events = Vec::with_capacity(usize::try_from(limit.min(4096)).unwrap_or(0));
    while let Some(row) = rows.next().map_err(sql_error)? {
        events.push(decoder.decode(row, None)?);
    }
    Ok(events)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    // Conflicts and duplicates are normal control flow under contention, so returned errors are
    // recorded at debug level; real failures are logged at error level by the writer.
    #[tracing::instrument(
        skip_all,
        fields(
            streams = commit.streams.len(),
            events = commit.event_count(),
            command_id = commit.idempotency.as_ref().map(|i| i.command_id.as_str()),
        ),
        err(level = "debug")
    )]
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, StoreError> {
        validate_commit(&commit, MAX_COMMIT_ACTIONS)?;
        let encoded = Encoded::of(&commit)?;
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| StoreError::Internal("sqlite writer is shut down".into()))?;
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Internal("sqlite writer is shut down".into()))?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(WriteRequest {
                commit,
                encoded,
                reply,
                _slot: slot,
            })
            .map_err(|_| StoreError::Internal("sqlite writer is gone".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("sqlite writer dropped the commit".into()))?
    }

    #[tracing::instrument(skip_all, fields(stream = %stream), err)]
    async fn load(&self, stream: &StreamRef) -> Result<LoadedStream, StoreError> {
        let stream = stream.clone();
        self.with_reader(move |conn| load_stream(conn, &stream))
            .await
    }

    #[tracing::instrument(skip_all, fields(stream = %stream, from = versions.start(), to = versions.end()), err)]
    async fn read(
        &self,
        stream: &StreamRef,
        versions: RangeInclusive<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let stream = stream.clone();
        self.with_reader(move |conn| read_range(conn, &stream, versions))
            .await
    }

    #[tracing::instrument(skip_all, fields(after = %cursor, limit = limit), err)]
    async fn feed(
        &self,
        cursor: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One partition: a cursor's other partitions hold nothing here.
        let after = cursor.position(0);
        if let Some(page) = self.published.recent.page(after, limit) {
            return Ok(page);
        }
        // A large page over committed positions is read as several ranges on several
        // connections at once: decoding JSON is what bounds a catch-up scan, and it spreads over
        // cores. A range may only be bounded if it lies at or below the published head: every
        // later commit gets higher positions, so such a range can no longer change, and the
        // concatenation is exactly the first `limit` events after `after`.
        let head = self.published.head.load(Ordering::Acquire);
        let parts = self.feed_parallelism.min(limit / MIN_FEED_PART).max(1);
        let chunk = (limit / parts) as u64;
        let bounded = chunk * (parts as u64 - 1);
        if parts == 1 || head < after.saturating_add(bounded) {
            return self
                .with_reader(move |conn| feed_page(conn, after, u64::MAX, limit))
                .await;
        }
        let _permits = self.reader_permits(parts).await?;
        let mut tasks = Vec::with_capacity(parts);
        for i in 0..parts as u64 {
            let from = after + i * chunk;
            let (upto, part_limit) = if i + 1 < parts as u64 {
                (from + chunk, chunk as usize)
            } else {
                (u64::MAX, limit - bounded as usize)
            };
            // Spawned now, so the parts run at once; awaited in order below.
            tasks.push(self.spawn_reader(move |conn| feed_page(conn, from, upto, part_limit)));
        }
        let mut events: Vec<EventEnvelope> = Vec::new();
        for task in tasks {
            let part = join_reader(task).await?;
            if events.is_empty() {
                events = part;
            } else {
                events.extend(part);
            }
        }
        Ok(events)
    }

    async fn feed_filtered(&self, read: FeedFilter<'_>) -> Result<FilteredPage, StoreError> {
        if read.limit > 0 {
            let position = read.after.position(0);
            let recent = &self.published.recent;
            if let Some(page) = recent.page_filtered(position, read.limit, read.keep) {
                return Ok(page);
            }
        }
        FilteredPage::of_feed(self, read).await
    }

    async fn head(&self) -> Result<FeedCursor, StoreError> {
        Ok(FeedCursor::at(self.published.head.load(Ordering::Acquire)))
    }

    #[tracing::instrument(skip_all, fields(command_id = %command_id), err)]
    async fn idempotency(
        &self,
        command_id: &str,
    ) -> Result<Option<(CommitResult, Idempotency)>, StoreError> {
        let command_id = command_id.to_owned();
        self.with_reader(move |conn| writer::find_idempotency(conn, &command_id))
            .await
    }

    fn commit_notifier(&self) -> Option<Arc<Notify>> {
        Some(self.published.notify.clone())
    }
}
