//! The single writer thread, its group commit, and the background checkpointer.
//!
//! All appends go through one thread that owns the only write connection. It takes every commit
//! waiting in its queue (up to a cap) and writes them in ONE transaction, and each caller gets
//! its own outcome. The group then costs one COMMIT, so one WAL fsync under `synchronous=FULL`,
//! however many commits it holds. Commits in one group see each other's writes, so two commits
//! to the same stream in one group are checked in queue order.
//!
//! The usual group needs no savepoints: each commit's expected versions and command id are
//! checked by reads before it writes anything, so a conflict or a duplicate leaves nothing to
//! undo. Only a commit that fails in the middle of its writes (a full disk, a constraint) does:
//! then the whole transaction is rolled back and the group is written again, this time with one
//! SAVEPOINT per commit, so that only the failing commit is lost (`write_group`).
//!
//! Callers are answered only after the group's COMMIT has returned, so an acknowledged commit is
//! durable (under FULL) and visible to every reader.
//!
//! Gathering: when the previous group held several commits (there are concurrent writers), the
//! writer lingers briefly for as many requests as last time before starting the next group, so
//! writers that were just answered can join it instead of each paying a fsync of its own. A lone
//! writer never waits.
//!
//! Checkpoints run on their own thread and connection (`wal_autocheckpoint` is off on the
//! writer), so copying WAL pages into the database file and its two fsyncs never stall a commit.
//! Once a checkpoint has caught up, the writer rewinds the WAL between two groups (see
//! [`super::wal`]), so the WAL stays a few megabytes long under any load.

use super::codec::{format_timestamp, optional_row, sql_error};
use super::recent::{committed_envelopes, RecentFeed};
use super::wal::restart_wal;
use chrono::Utc;
use commands::StreamRef;
use commands::{
    AppendOutcome, Commit, CommitResult, Idempotency, Payload, StoreError, StreamVersion,
};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit};

/// One queued append and where its answer goes.
pub(crate) struct WriteRequest {
    pub(crate) commit: Commit,
    /// The commit's JSON columns, encoded by the caller so the one writer thread does not.
    pub(crate) encoded: Encoded,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    /// A queue slot; released when the request is answered (back-pressure on `append`).
    pub(crate) _slot: OwnedSemaphorePermit,
}

/// The JSON text columns of one commit, in the commit's order.
pub(crate) struct Encoded {
    /// `(payload, metadata)` of every event, stream by stream. The payload is already JSON
    /// text (shared with the commit's event, not copied).
    events: Vec<(Payload, String)>,
    /// The snapshot state of every stream part that carries one.
    snapshots: Vec<Option<String>>,
    /// The idempotency outcome, when the commit has a command id.
    outcome: Option<String>,
}

impl Encoded {
    /// Encodes a commit's payloads, metadata, snapshots and idempotency outcome.
    pub(crate) fn of(commit: &Commit) -> Result<Self, StoreError> {
        let mut events = Vec::with_capacity(commit.event_count());
        let mut snapshots = Vec::with_capacity(commit.streams.len());
        for part in &commit.streams {
            for event in &part.events {
                events.push((event.payload.clone(), json(&event.metadata, "metadata")?));
            }
            snapshots.push(match &part.snapshot {
                Some(snapshot) => Some(json(&snapshot.state, "snapshot")?),
                None => None,
            });
        }
        let outcome = match &commit.idempotency {
            Some(idem) => Some(json(&idem.outcome, "outcome")?),
            None => None,
        };
        Ok(Self {
            events,
            snapshots,
            outcome,
        })
    }
}

/// The stream versions the writer knows, so checking a commit's expected versions costs no
/// query. Exact because this writer is the file's only writer (the data directory is locked): an
/// entry is only ever set from a group that committed, and a failed group clears the cache. Were
/// another writer to append behind its back anyway, the `(stream_type, stream_id, sequence)`
/// UNIQUE index would refuse the stale write, and the group's rewrite (with savepoints, which
/// reads every version from SQLite) would answer it with the right conflict.
pub(crate) struct KnownVersions {
    committed: hashlink::LruCache<StreamRef, u64>,
}

impl KnownVersions {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            committed: hashlink::LruCache::new(capacity.max(1)),
        }
    }
}

/// The versions one group has seen or written so far (its own uncommitted writes included).
struct GroupVersions<'a> {
    known: &'a mut KnownVersions,
    /// Versions written by this group's commits, committed only with the group.
    written: HashMap<StreamRef, u64>,
}

impl GroupVersions<'_> {
    fn get(&mut self, stream: &StreamRef) -> Option<u64> {
        self.written
            .get(stream)
            .copied()
            .or_else(|| self.known.committed.get(stream).copied())
    }

    /// After the group's COMMIT: its writes become known versions.
    fn committed(self) {
        for (stream, version) in self.written {
            self.known.committed.insert(stream, version);
        }
    }

    /// After a rollback: nothing this group saw can be trusted.
    fn rolled_back(self) {
        self.known.committed.clear();
    }
}

/// What the writer publishes after each group.
pub(crate) struct Published {
    pub(crate) head: AtomicU64,
    pub(crate) head_watch: watch::Sender<u64>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) groups: AtomicU64,
    pub(crate) commits: AtomicU64,
    /// Times the writer rewound the WAL to its start.
    pub(crate) wal_restarts: AtomicU64,
    /// Set by the checkpointer when a checkpoint has copied the whole WAL into the database
    /// file; the writer then rewinds the WAL after its current group.
    pub(crate) wal_caught_up: AtomicBool,
    /// The newest committed events, for `feed` (filled before the head moves).
    pub(crate) recent: RecentFeed,
}

impl Published {
    /// Advances the head, then wakes tailers. The head moves first so that a woken tailer (or a
    /// caller that just got its answer) never reads a head older than the commit it saw.
    fn advance(&self, position: u64) {
        let previous = self.head.fetch_max(position, Ordering::AcqRel);
        if position > previous {
            self.head_watch.send_replace(position);
            self.notify.notify_waiters();
        }
    }
}

/// How many stream versions the writer remembers (see [`KnownVersions`]).
const KNOWN_VERSIONS: usize = 65_536;

/// How the writer forms groups.
pub(crate) struct GroupConfig {
    pub(crate) max_group: usize,
    pub(crate) linger: Duration,
    /// The connection's busy timeout, restored after a WAL restart's shorter wait.
    pub(crate) busy_timeout: Duration,
}

/// The writer loop: runs until every sender is gone and the queue is drained.
pub(crate) fn run(
    mut conn: Connection,
    rx: Receiver<WriteRequest>,
    published: Arc<Published>,
    config: GroupConfig,
    checkpoints: SyncSender<()>,
) {
    let max_group = config.max_group.max(1);
    let mut group: Vec<WriteRequest> = Vec::with_capacity(max_group);
    // How many requests the previous group held: the concurrency we expect to see again.
    let mut expected = 1usize;
    let mut known = KnownVersions::new(KNOWN_VERSIONS);
    while let Ok(first) = rx.recv() {
        group.push(first);
        group.extend(rx.try_iter().take(max_group - 1));
        let wanted = expected.min(max_group);
        if group.len() < wanted && !config.linger.is_zero() {
            let deadline = Instant::now() + config.linger;
            while group.len() < wanted {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                match rx.recv_timeout(left) {
                    Ok(next) => {
                        group.push(next);
                        let room = max_group - group.len();
                        group.extend(rx.try_iter().take(room));
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        expected = group.len();

        let outcomes = write_group(&mut conn, &group, &mut known);
        published.groups.fetch_add(1, Ordering::Relaxed);
        published
            .commits
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let head = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(AppendOutcome::Committed(r)) => r.position,
                _ => None,
            })
            .max();
        // The committed events move into the in-memory feed tail before the head moves, so a
        // tailer woken by the new head finds them there.
        let mut committed = Vec::new();
        let mut replies = Vec::with_capacity(group.len());
        for (request, outcome) in group.drain(..).zip(outcomes) {
            committed_envelopes(request.commit, &outcome, &mut committed);
            replies.push((request.reply, outcome, request._slot));
        }
        let evicted = published.recent.push(committed);
        if let Some(position) = head {
            published.advance(position);
            // Full means a checkpoint request is already pending; one is enough.
            if let Err(TrySendError::Disconnected(())) = checkpoints.try_send(()) {
                tracing::warn!("sqlite checkpointer is gone; the WAL will only grow");
            }
        }
        for (reply, outcome, _slot) in replies {
            // The caller may have stopped waiting (its future was dropped); the commit stands.
            let _ = reply.send(outcome);
        }
        // Events that left the in-memory tail are freed after the callers have their answers.
        drop(evicted);
        if published.wal_caught_up.swap(false, Ordering::AcqRel)
            && restart_wal(&conn, config.busy_timeout)
        {
            published.wal_restarts.fetch_add(1, Ordering::Relaxed);
        }
    }
    tracing::debug!("sqlite writer stopped");
}

/// The checkpointer loop: after commits, copies the WAL into the database file (PASSIVE: it
/// never blocks the writer or readers), at most once per `interval`, and tells the writer when
/// it has copied all of it. Stops when the writer does, after a last checkpoint.
pub(crate) fn run_checkpointer(
    conn: Connection,
    rx: Receiver<()>,
    interval: Duration,
    published: Arc<Published>,
) {
    let checkpoint = || {
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match result {
            Ok((wal_frames, copied)) => {
                tracing::trace!(wal_frames, copied, "sqlite checkpoint");
                if wal_frames > 0 && copied == wal_frames {
                    published.wal_caught_up.store(true, Ordering::Release);
                }
            }
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
        }
    };
    let mut pending = false;
    loop {
        if !pending && rx.recv().is_err() {
            break;
        }
        pending = false;
        checkpoint();
        let until = Instant::now() + interval;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    checkpoint();
                    return;
                }
            }
        }
    }
    checkpoint();
}

/// Writes one group in one transaction; returns one outcome per request, in order.
///
/// The usual case needs no savepoints: a duplicate or a conflict is found by reads before a
/// commit writes anything, so it leaves nothing to undo. Only a failure in the middle of a
/// commit's writes (a full disk, a constraint) does; then the whole transaction is rolled back
/// and the group is written again with one savepoint per commit, so that only the failing
/// commit is lost.
fn write_group(
    conn: &mut Connection,
    group: &[WriteRequest],
    known: &mut KnownVersions,
) -> Vec<Result<AppendOutcome, StoreError>> {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "sqlite writer could not begin a transaction");
        return group.iter().map(|_| Err(clone_error(&e))).collect();
    }
    let mut versions = GroupVersions {
        known,
        written: HashMap::new(),
    };
    let mut outcomes = Vec::with_capacity(group.len());
    for request in group {
        match check(conn, &request.commit, Some(&mut versions)) {
            Err(e) => outcomes.push(Err(e)),
            Ok(Checked::Duplicate(outcome)) => outcomes.push(Ok(outcome)),
            Ok(Checked::Fresh(current)) => {
                match write(conn, &request.commit, &request.encoded, &current) {
                    Ok(outcome) => {
                        if let AppendOutcome::Committed(result) = &outcome {
                            for written in &result.streams {
                                versions
                                    .written
                                    .insert(written.stream.clone(), written.version);
                            }
                        }
                        outcomes.push(Ok(outcome));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a commit failed mid-write; rewriting its group with savepoints");
                        rollback(conn);
                        versions.rolled_back();
                        return write_group_with_savepoints(conn, group);
                    }
                }
            }
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        tracing::error!(error = %e, "sqlite group commit failed");
        rollback(conn);
        versions.rolled_back();
        return group.iter().map(|_| Err(clone_error(&e))).collect();
    }
    versions.committed();
    log_failures(&outcomes);
    outcomes
}

fn log_failures(outcomes: &[Result<AppendOutcome, StoreError>]) {
    for outcome in outcomes {
        if let Err(e @ (StoreError::Internal(_) | StoreError::Unavailable(_))) = outcome {
            tracing::error!(error = %e, "sqlite append failed");
        }
    }
}

/// The slow path of [`write_group`]: one savepoint per commit.
fn write_group_with_savepoints(
    conn: &mut Connection,
    group: &[WriteRequest],
) -> Vec<Result<AppendOutcome, StoreError>> {
    let all_fail = |e: StoreError| -> Vec<Result<AppendOutcome, StoreError>> {
        group.iter().map(|_| Err(clone_error(&e))).collect()
    };
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "sqlite writer could not begin a transaction");
        return all_fail(e);
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for request in group {
        let outcome = match exec(conn, "SAVEPOINT one_commit") {
            Ok(()) => {
                let outcome = apply(conn, request);
                let end = if outcome.is_ok() {
                    exec(conn, "RELEASE one_commit")
                } else {
                    exec(conn, "ROLLBACK TO one_commit")
                        .and_then(|()| exec(conn, "RELEASE one_commit"))
                };
                match end {
                    Ok(()) => outcome,
                    Err(e) => {
                        // The savepoint machinery itself failed: trust nothing in this group.
                        tracing::error!(error = %e, "sqlite savepoint failed; rolling back the group");
                        rollback(conn);
                        return all_fail(e);
                    }
                }
            }
            Err(e) => Err(e),
        };
        outcomes.push(outcome);
    }
    if let Err(e) = exec(conn, "COMMIT") {
        tracing::error!(error = %e, "sqlite group commit failed");
        rollback(conn);
        return all_fail(e);
    }
    log_failures(&outcomes);
    outcomes
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "sqlite rollback failed");
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(sql_error)
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => StoreError::Conflict {
            stream: stream.clone(),
            expected: *expected,
            actual: *actual,
        },
        StoreError::InvalidCommit(m) => StoreError::InvalidCommit(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

fn json(value: &impl serde::Serialize, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(format!("encoding {what}: {e}")))
}

/// Looks up a command id on any connection (the writer inside its transaction, or a reader).
pub(crate) fn find_idempotency(
    conn: &Connection,
    command_id: &str,
) -> Result<Option<(CommitResult, Idempotency)>, StoreError> {
    let row: Option<(String, String, String)> = optional_row(
        conn,
        "SELECT fingerprint, outcome, result FROM idempotency WHERE command_id = ?1",
        [command_id],
    )?;
    let Some((fingerprint, outcome, result)) = row else {
        return Ok(None);
    };
    let bad =
        |e: serde_json::Error| StoreError::Internal(format!("undecodable idempotency record: {e}"));
    Ok(Some((
        serde_json::from_str(&result).map_err(bad)?,
        Idempotency {
            command_id: command_id.to_owned(),
            fingerprint,
            outcome: serde_json::from_str(&outcome).map_err(bad)?,
        },
    )))
}

/// What the reads before a commit's writes found.
enum Checked {
    /// The command id was seen before: the first commit's answer.
    Duplicate(AppendOutcome),
    /// Every expected version holds; these are the streams' current versions.
    Fresh(Vec<u64>),
}

/// The reads of one commit: its command id, then every stream's version (from `versions` when
/// the writer knows it). Writes nothing.
fn check(
    conn: &Connection,
    commit: &Commit,
    mut versions: Option<&mut GroupVersions<'_>>,
) -> Result<Checked, StoreError> {
    // The command id first: an exact retry of a commit that went through carries expected
    // versions that are stale by now, and must get the first answer, not a Conflict.
    if let Some(idem) = &commit.idempotency {
        if let Some((result, idempotency)) = find_idempotency(conn, &idem.command_id)? {
            return Ok(Checked::Duplicate(AppendOutcome::Duplicate {
                result,
                idempotency,
            }));
        }
    }
    let mut current_versions = Vec::with_capacity(commit.streams.len());
    for part in &commit.streams {
        let cached = versions.as_mut().and_then(|v| v.get(&part.stream));
        let current = match cached {
            Some(version) => version,
            None => stream_version(conn, &part.stream)?,
        };
        if current != part.expected_version {
            return Err(StoreError::Conflict {
                stream: part.stream.clone(),
                expected: part.expected_version,
                actual: Some(current),
            });
        }
        current_versions.push(current);
    }
    Ok(Checked::Fresh(current_versions))
}

/// A stream's version as stored (0 for a stream without events).
fn stream_version(conn: &Connection, stream: &StreamRef) -> Result<u64, StoreError> {
    let current: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE stream_type = ?1 AND stream_id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![stream.stream_type.as_str(), stream.stream_id.as_str()],
                |row| row.get(0),
            )
        })
        .map_err(sql_error)?;
    Ok(u64::try_from(current).unwrap_or(0))
}

/// Writes one commit inside the current savepoint. Any error leaves partial writes that the
/// caller rolls back to the savepoint.
fn apply(conn: &Connection, request: &WriteRequest) -> Result<AppendOutcome, StoreError> {
    match check(conn, &request.commit, None)? {
        Checked::Duplicate(outcome) => Ok(outcome),
        Checked::Fresh(versions) => write(conn, &request.commit, &request.encoded, &versions),
    }
}

/// The writes of a checked commit: its events, snapshots and idempotency record. An error may
/// leave some of them behind; the caller undoes them.
fn write(
    conn: &Connection,
    commit: &Commit,
    encoded: &Encoded,
    versions: &[u64],
) -> Result<AppendOutcome, StoreError> {
    let mut encoded_events = encoded.events.iter();
    let mut insert_stmt = conn
        .prepare_cached(
            "INSERT INTO events (event_id, stream_type, stream_id, sequence, event_type, \
             event_version, occurred_at, payload, metadata) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sql_error)?;
    let mut streams = Vec::with_capacity(commit.streams.len());
    let mut position = None;
    for ((part, &current), snapshot_state) in
        commit.streams.iter().zip(versions).zip(&encoded.snapshots)
    {
        let stream_type = part.stream.stream_type.as_str();
        let stream_id = part.stream.stream_id.as_str();
        let mut sequence = current;
        let mut id_buf = uuid::Uuid::encode_buffer();
        for event in &part.events {
            sequence += 1;
            let (payload, metadata) = encoded_events.next().ok_or_else(|| {
                StoreError::Internal("a commit's encoded events do not match it".into())
            })?;
            let event_id = event.event_id.hyphenated().encode_lower(&mut id_buf);
            let inserted = insert_stmt.execute(params![
                &*event_id,
                stream_type,
                stream_id,
                super::codec::to_sql_int(sequence),
                event.event_type,
                event.event_version,
                format_timestamp(&event.occurred_at),
                payload.json(),
                metadata,
            ]);
            if let Err(e) = inserted {
                return Err(insert_error(e, event.event_id));
            }
            position = Some(conn.last_insert_rowid() as u64);
        }
        if let (Some(snapshot), Some(state)) = (&part.snapshot, snapshot_state) {
            conn.prepare_cached(
                "INSERT INTO snapshots (stream_type, stream_id, version, schema_version, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (stream_type, stream_id) DO UPDATE SET \
                   version = excluded.version, schema_version = excluded.schema_version, \
                   state = excluded.state \
                 WHERE excluded.version >= snapshots.version",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    stream_type,
                    stream_id,
                    super::codec::to_sql_int(snapshot.version),
                    snapshot.schema_version,
                    state,
                ])
            })
            .map_err(sql_error)?;
        }
        streams.push(StreamVersion {
            stream: part.stream.clone(),
            version: sequence,
        });
    }
    let result = CommitResult {
        position,
        streams,
        committed_at: Utc::now(),
    };
    if let Some(idem) = &commit.idempotency {
        conn.prepare_cached(
            "INSERT INTO idempotency (command_id, fingerprint, outcome, result) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                idem.command_id,
                idem.fingerprint,
                encoded.outcome,
                json(&result, "commit result").map_err(to_sql_failure)?,
            ])
        })
        .map_err(sql_error)?;
    }
    Ok(AppendOutcome::Committed(result))
}

fn to_sql_failure(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(e.to_string())))
}

/// A UNIQUE violation on `event_id` means the caller re-sent events that are already stored
/// (for example a retry without a command id): the commit is malformed, not the store broken.
fn insert_error(e: rusqlite::Error, event_id: uuid::Uuid) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
        && e.to_string().contains("events.event_id")
    {
        return StoreError::InvalidCommit(format!("event {event_id} is already stored"));
    }
    sql_error(e)
}
