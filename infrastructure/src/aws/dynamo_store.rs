//! [`DynamoEventStore`]: the [`EventStore`] on DynamoDB, in the layout of DESIGN.md.
//!
//! - `events`: pk `stream` = `order#<id>`, sk `seq`; item layout in [`super::codec`]. The table's
//!   stream (NEW_IMAGE) feeds the relay.
//!   A stream's snapshot is an item of its own partition, above every event
//!   ([`codec::SNAPSHOT_SEQ`]).
//! - `idempotency`: pk `command_id`; `fingerprint`, `outcome` and `result` (JSON text) and
//!   `expires_at` (epoch seconds, the table's TTL attribute).
//!
//! **append** is ONE TransactWriteItems (at most 100 actions), in this order: the idempotency
//! item (`attribute_not_exists(command_id)`), then per stream a ConditionCheck that event
//! `expected_version` exists (only when `expected_version > 0`), a Put per event
//! (`attribute_not_exists(seq)`) and the snapshot item's Put (`version < :new` or absent). A failed
//! condition on the idempotency item means Duplicate (the stored first result is read back and
//! returned); on a stream's items it means Conflict on that stream.
//!
//! The existence check costs an action only while the commit has room: events are never deleted,
//! so "event `expected_version` exists" once true stays true, and a commit whose writes already
//! fill the 100 actions checks it with a consistent GetItem before the transaction instead. A new
//! stream (`expected_version == 0`) needs no check: the Put of `seq = 1` carries it.
//!
//! **load** is ONE consistent Query of the stream's partition, newest first: the snapshot item
//! comes first (it sorts above every event), then the events down to the snapshot's version.
//! The first page asks for the snapshot plus [`DynamoStoreOptions::snapshot_every`] events, the
//! most a tail holds while the command service snapshots at that interval, so one request reads
//! a stream whatever its length; a longer tail (a stream without a snapshot, or a commit that
//! crossed the interval with many events) follows the pages. The price is that the first page
//! may also read up to `snapshot_every` events older than the snapshot, which it drops.
//!
//! **feed / head** read the feed table that [`FeedIndexer`] writes. In production the relay
//! indexes events from the DynamoDB Stream; with [`DynamoStoreOptions::index_on_append`] (tests,
//! and single-process setups without a relay) the store indexes each commit itself right after
//! the transaction, holding a process-wide lock across both so the feed follows commit order.
//! The positions are not known at commit time, so [`CommitResult::position`] is always `None`.
//!
//! `ClientRequestToken` is not used (and the emulator ignores it anyway): a retried append that
//! hits its own earlier, actually committed, attempt recognises itself by its event ids or its
//! idempotency record and reports success.

use super::codec::{self, decode_event, envelope_of, event_item, n, s, AttrSource, Item};
use super::ddb::{self, built, QuerySpec, TxError, CONDITIONAL_CHECK_FAILED};
use super::error::RetryPolicy;
use super::feed_index::FeedIndexer;
use super::metrics::{RequestCounters, RequestCounts};
use super::names::ResourceNames;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::builders::PutBuilder;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use commands::{
    validate_commit, AppendOutcome, Commit, CommitResult, EventEnvelope, EventStore, Idempotency,
    LoadedStream, Snapshot, StoreError, StreamRef, StreamVersion, MAX_COMMIT_ACTIONS,
};
use commands::{FeedCursor, FeedTimeRange};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

const COMMAND_ID: &str = "command_id";
const FINGERPRINT: &str = "fingerprint";
const OUTCOME: &str = "outcome";
const RESULT: &str = "result";
const EXPIRES_AT: &str = "expires_at";

/// A transaction Put of `item` into `table` only if `condition` holds; `name` is the
/// `(#alias, attribute)` the condition names (more go on the returned builder).
fn conditional_put(table: &str, item: Item, condition: &str, name: (&str, &str)) -> PutBuilder {
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .expression_attribute_names(name.0, name.1)
}

/// Options of [`DynamoEventStore`]. The default is the production setup (a relay indexes).
#[derive(Debug, Clone)]
pub struct DynamoStoreOptions {
    /// Index committed events into the feed inline, right after each commit (see the module
    /// docs). Off in production, where the relay does it from the DynamoDB Stream.
    pub index_on_append: bool,
    /// How long an idempotency record is kept (the TTL written into `expires_at`). A command id
    /// repeated after DynamoDB's TTL sweep removed the record (which may lag the expiry by up
    /// to two days) is treated as new.
    pub idempotency_ttl: Duration,
    /// Transient failures are retried this way.
    pub retry: RetryPolicy,
    /// Items per Query page (`None`: DynamoDB's 1 MB pages). Tests set it small to exercise
    /// paging.
    pub query_page_size: Option<i32>,
    /// The command service's snapshot interval ([`commands::ServiceConfig::snapshot_every`]):
    /// a load's first page reads the snapshot and this many newest events.
    pub snapshot_every: u64,
}

impl Default for DynamoStoreOptions {
    fn default() -> Self {
        Self {
            index_on_append: false,
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            retry: RetryPolicy::default(),
            query_page_size: None,
            snapshot_every: commands::ServiceConfig::default().snapshot_every,
        }
    }
}

/// The DynamoDB event store. Cheap to share behind an `Arc`.
pub struct DynamoEventStore {
    client: Client,
    events_table: String,
    idempotency_table: String,
    options: DynamoStoreOptions,
    counters: Arc<RequestCounters>,
    indexer: FeedIndexer,
    /// Held across commit + indexing when indexing inline, so the feed follows commit order.
    append_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DynamoEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoEventStore")
            .field("events_table", &self.events_table)
            .field("index_on_append", &self.options.index_on_append)
            .finish_non_exhaustive()
    }
}

/// An append's transaction, what each of its actions is about, and the streams whose existence
/// check did not fit in it.
struct AppendPlan {
    items: Vec<TransactWriteItem>,
    actions: Vec<Action>,
    prechecks: Vec<usize>,
}

/// What each action of an append transaction is about, to read CancellationReasons.
#[derive(Debug, Clone, Copy)]
enum Action {
    Idempotency,
    /// An existence check, event or snapshot of the commit's stream at this index.
    Stream(usize),
}

impl DynamoEventStore {
    /// A store over the tables of `names` (which must exist: see [`super::provision`]).
    pub fn new(client: Client, names: &ResourceNames, options: DynamoStoreOptions) -> Self {
        let indexer = FeedIndexer::new(client.clone(), names, options.retry);
        Self {
            client,
            events_table: names.events_table.clone(),
            idempotency_table: names.idempotency_table.clone(),
            options,
            counters: Arc::new(RequestCounters::default()),
            indexer,
            append_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Requests this store made to the events, snapshots and idempotency tables so far. Feed
    /// reads and inline indexing are counted by [`FeedIndexer::counts`] instead, so that the
    /// command path can be measured alone.
    pub fn counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// The feed indexer this store reads `feed`/`head` through (and indexes with when
    /// `index_on_append` is set).
    pub fn indexer(&self) -> &FeedIndexer {
        &self.indexer
    }

    fn stream_key(stream: &StreamRef, seq: u64) -> Item {
        HashMap::from([
            (codec::STREAM.to_owned(), s(stream.key())),
            (codec::SEQ.to_owned(), n(seq)),
        ])
    }

    fn idempotency_item(
        &self,
        idem: &Idempotency,
        result: &CommitResult,
    ) -> Result<Item, StoreError> {
        let unencodable = |what: &str, e: serde_json::Error| {
            StoreError::InvalidCommit(format!("unencodable {what}: {e}"))
        };
        let outcome =
            serde_json::to_string(&idem.outcome).map_err(|e| unencodable("outcome", e))?;
        let result_text = serde_json::to_string(result).map_err(|e| unencodable("result", e))?;
        let expires = result.committed_at
            + chrono::Duration::from_std(self.options.idempotency_ttl)
                .unwrap_or_else(|_| chrono::Duration::days(7));
        Ok(HashMap::from([
            (COMMAND_ID.to_owned(), s(idem.command_id.clone())),
            (FINGERPRINT.to_owned(), s(idem.fingerprint.clone())),
            (OUTCOME.to_owned(), s(outcome)),
            (RESULT.to_owned(), s(result_text)),
            (
                EXPIRES_AT.to_owned(),
                n(u64::try_from(expires.timestamp()).unwrap_or(0)),
            ),
        ]))
    }

    /// Builds the transaction of `commit` and the streams whose existence check did not fit.
    fn plan(&self, commit: &Commit, result: &CommitResult) -> Result<AppendPlan, StoreError> {
        let mut room = MAX_COMMIT_ACTIONS.saturating_sub(commit.write_count());
        let mut items = Vec::with_capacity(MAX_COMMIT_ACTIONS);
        let mut actions = Vec::with_capacity(MAX_COMMIT_ACTIONS);
        let mut prechecks = Vec::new();

        if let Some(idem) = &commit.idempotency {
            let item = self.idempotency_item(idem, result)?;
            let put = conditional_put(
                &self.idempotency_table,
                item,
                "attribute_not_exists(#k)",
                ("#k", COMMAND_ID),
            );
            let put = built(put.build())?;
            items.push(TransactWriteItem::builder().put(put).build());
            actions.push(Action::Idempotency);
        }
        for (i, part) in commit.streams.iter().enumerate() {
            if part.expected_version > 0 {
                if room > 0 {
                    room -= 1;
                    let check = built(
                        ConditionCheck::builder()
                            .table_name(&self.events_table)
                            .set_key(Some(Self::stream_key(&part.stream, part.expected_version)))
                            .condition_expression("attribute_exists(#q)")
                            .expression_attribute_names("#q", codec::SEQ)
                            .build(),
                    )?;
                    items.push(TransactWriteItem::builder().condition_check(check).build());
                    actions.push(Action::Stream(i));
                } else {
                    prechecks.push(i);
                }
            }
            for (j, event) in part.events.iter().enumerate() {
                let seq = part.expected_version + 1 + j as u64;
                let item = event_item(&part.stream, seq, event)?;
                let put = conditional_put(
                    &self.events_table,
                    item,
                    "attribute_not_exists(#q)",
                    ("#q", codec::SEQ),
                );
                let put = built(put.build())?;
                items.push(TransactWriteItem::builder().put(put).build());
                actions.push(Action::Stream(i));
            }
            if let Some(snap) = &part.snapshot {
                let item = codec::snapshot_item(&part.stream, snap)?;
                let put = conditional_put(
                    &self.events_table,
                    item,
                    "attribute_not_exists(#s) OR #v < :v",
                    ("#s", codec::STREAM),
                )
                .expression_attribute_names("#v", codec::SNAPSHOT_VERSION)
                .expression_attribute_values(":v", n(snap.version));
                let put = built(put.build())?;
                items.push(TransactWriteItem::builder().put(put).build());
                actions.push(Action::Stream(i));
            }
        }
        Ok(AppendPlan {
            items,
            actions,
            prechecks,
        })
    }

    /// One consistent GetItem, retried on transient failures.
    async fn get(&self, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
        Ok(self
            .options
            .retry
            .retry("GetItem", |_| {
                ddb::get_item(&self.client, &self.counters, table, key.clone())
            })
            .await?)
    }

    /// Whether event `seq` of `stream` exists (consistent).
    async fn event_exists(&self, stream: &StreamRef, seq: u64) -> Result<bool, StoreError> {
        let found = self
            .get(&self.events_table, Self::stream_key(stream, seq))
            .await?;
        Ok(found.is_some())
    }

    /// The event id stored at `seq` of `stream`, if any.
    async fn event_id_at(
        &self,
        stream: &StreamRef,
        seq: u64,
    ) -> Result<Option<String>, StoreError> {
        let found = self
            .get(&self.events_table, Self::stream_key(stream, seq))
            .await?;
        Ok(found.and_then(|item| item.string(codec::EVENT_ID).map(str::to_owned)))
    }

    async fn commit_once(
        &self,
        commit: &Commit,
        result: &CommitResult,
    ) -> Result<AppendOutcome, StoreError> {
        let AppendPlan {
            items,
            actions,
            prechecks,
        } = self.plan(commit, result)?;
        for &i in &prechecks {
            let part = &commit.streams[i];
            if !self
                .event_exists(&part.stream, part.expected_version)
                .await?
            {
                return Err(StoreError::Conflict {
                    stream: part.stream.clone(),
                    expected: part.expected_version,
                    actual: None,
                });
            }
        }

        // Set once an attempt failed in a way that may still have committed (a timeout, a lost
        // response): a later "condition failed" may then be this very commit.
        let mut ambiguous = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match ddb::transact(&self.client, &self.counters, items.clone()).await {
                Ok(()) => return Ok(AppendOutcome::Committed(result.clone())),
                Err(err) => err,
            };
            match err {
                TxError::ConditionFailed(reasons) => {
                    return self
                        .cancelled(commit, result, &actions, &reasons, ambiguous)
                        .await
                }
                TxError::Failed(failure) => {
                    if failure.transient && attempt < self.options.retry.max_attempts.max(1) {
                        ambiguous = true;
                        let pause = self.options.retry.delay(attempt);
                        tracing::warn!(attempt, error = %failure, "append failed transiently, retrying");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(failure.into());
                }
            }
        }
    }

    /// Maps a cancelled append: Duplicate when the idempotency item exists, Conflict on the
    /// first stream whose condition failed, or success when an earlier attempt of this very
    /// append had committed.
    async fn cancelled(
        &self,
        commit: &Commit,
        result: &CommitResult,
        actions: &[Action],
        reasons: &[Option<String>],
        ambiguous: bool,
    ) -> Result<AppendOutcome, StoreError> {
        let failed = |a: &Action| {
            actions
                .iter()
                .zip(reasons)
                .any(|(b, r)| same(a, b) && r.as_deref() == Some(CONDITIONAL_CHECK_FAILED))
        };
        if failed(&Action::Idempotency) {
            if let Some(idem) = &commit.idempotency {
                return match self.lookup(&idem.command_id).await? {
                    // Our own earlier attempt committed (its result carries our timestamp).
                    Some((first, _)) if &first == result => Ok(AppendOutcome::Committed(first)),
                    Some((first, record)) => Ok(AppendOutcome::Duplicate {
                        result: first,
                        idempotency: record,
                    }),
                    None => Err(StoreError::Unavailable(format!(
                        "command id {} was taken but its record is gone (expired); retry",
                        idem.command_id
                    ))),
                };
            }
        }
        for (i, part) in commit.streams.iter().enumerate() {
            if !failed(&Action::Stream(i)) {
                continue;
            }
            if ambiguous {
                let first_seq = part.expected_version + 1;
                if let Some(first) = part.events.first() {
                    let stored = self.event_id_at(&part.stream, first_seq).await?;
                    if stored.as_deref() == Some(first.event_id.to_string().as_str()) {
                        // The whole transaction is atomic: our events are there, so all of it is.
                        return Ok(AppendOutcome::Committed(result.clone()));
                    }
                }
            }
            return Err(StoreError::Conflict {
                stream: part.stream.clone(),
                expected: part.expected_version,
                actual: None,
            });
        }
        Err(StoreError::Internal(format!(
            "transaction cancelled with unexpected reasons {reasons:?}"
        )))
    }

    async fn lookup(
        &self,
        command_id: &str,
    ) -> Result<Option<(CommitResult, Idempotency)>, StoreError> {
        let key = HashMap::from([(COMMAND_ID.to_owned(), s(command_id))]);
        let item = self.get(&self.idempotency_table, key.clone()).await?;
        let Some(item) = item else { return Ok(None) };
        let text = |name: &str| {
            item.string(name).ok_or_else(|| {
                StoreError::Internal(format!("idempotency record {command_id} lacks {name}"))
            })
        };
        let corrupt = |e: serde_json::Error| {
            StoreError::Internal(format!("undecodable idempotency record {command_id}: {e}"))
        };
        let result: CommitResult = serde_json::from_str(text(RESULT)?).map_err(corrupt)?;
        let outcome = serde_json::from_str(text(OUTCOME)?).map_err(corrupt)?;
        Ok(Some((
            result,
            Idempotency {
                command_id: command_id.to_owned(),
                fingerprint: text(FINGERPRINT)?.to_owned(),
                outcome,
            },
        )))
    }

    /// Events of `stream` with `from <= seq <= to`, consistently, every page.
    async fn range(
        &self,
        stream: &StreamRef,
        from: u64,
        to: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let from = from.max(1);
        if to < from {
            return Ok(Vec::new());
        }
        let spec = QuerySpec {
            table: self.events_table.clone(),
            key_condition: "#s = :s AND #q BETWEEN :from AND :to".into(),
            names: HashMap::from([
                ("#s".to_owned(), codec::STREAM.to_owned()),
                ("#q".to_owned(), codec::SEQ.to_owned()),
            ]),
            values: HashMap::from([
                (":s".to_owned(), s(stream.key())),
                (":from".to_owned(), n(from)),
                (":to".to_owned(), n(to)),
            ]),
            forward: true,
            page_size: self.options.query_page_size,
            consistent: true,
            ..QuerySpec::default()
        };
        let items =
            ddb::query_retried(&self.client, &self.counters, &self.options.retry, &spec).await?;
        items.iter().map(decode_event).collect()
    }

    /// The stream in one consistent Query, newest first (see the module docs): its snapshot,
    /// if any, and the events after it, oldest first.
    async fn load_tail(
        &self,
        stream: &StreamRef,
    ) -> Result<(Option<Snapshot>, Vec<EventEnvelope>), StoreError> {
        let first_page = i32::try_from(self.options.snapshot_every.saturating_add(1))
            .unwrap_or(i32::MAX)
            .max(1);
        let spec = QuerySpec {
            table: self.events_table.clone(),
            key_condition: "#s = :s".into(),
            names: HashMap::from([("#s".to_owned(), codec::STREAM.to_owned())]),
            values: HashMap::from([(":s".to_owned(), s(stream.key()))]),
            forward: false,
            page_size: self.options.query_page_size,
            first_page: Some(
                self.options
                    .query_page_size
                    .map_or(first_page, |p| p.min(first_page)),
            ),
            stop_when: Some(reached_the_snapshot),
            consistent: true,
            ..QuerySpec::default()
        };
        let items =
            ddb::query_retried(&self.client, &self.counters, &self.options.retry, &spec).await?;
        let mut items = items.iter().peekable();
        let snapshot = match items.next_if(|item| codec::is_snapshot(*item)) {
            Some(item) => Some(
                codec::decode_snapshot(item)
                    .map_err(|e| StoreError::Internal(format!("the snapshot of {stream}: {e}")))?,
            ),
            None => None,
        };
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        let mut events = Vec::new();
        for item in items {
            let event = decode_event(item)?;
            if event.sequence <= after {
                break;
            }
            events.push(event);
        }
        events.reverse();
        Ok((snapshot, events))
    }

    /// Analysts' time-range replay over the `by_time` GSI: every event with
    /// `from <= occurred_at <= to`, ordered by (occurred_at, stream, seq). Queries each of the 16
    /// shards of every hour in the range, so keep ranges to what a caller can hold in memory. The
    /// GSI is eventually consistent: events committed a moment ago may be missing.
    #[tracing::instrument(skip_all, fields(%from, %to), err)]
    pub async fn events_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if to < from {
            return Ok(Vec::new());
        }
        let lo = codec::format_timestamp(&from);
        // Sort keys are `<occurred_at>#<stream>#<seq>`: everything at `to` sorts below this.
        let hi = format!("{}#\u{10FFFF}", codec::format_timestamp(&to));
        let mut out: Vec<(String, EventEnvelope)> = Vec::new();
        let mut hour = codec::truncate_to_hour(&from);
        while hour <= to {
            for shard in 0..codec::TIME_SHARDS {
                let spec = QuerySpec {
                    table: self.events_table.clone(),
                    index: Some(ResourceNames::EVENTS_BY_TIME.to_owned()),
                    key_condition: "#b = :b AND #t BETWEEN :lo AND :hi".into(),
                    names: HashMap::from([
                        ("#b".to_owned(), codec::BUCKET.to_owned()),
                        ("#t".to_owned(), codec::BUCKET_SORT.to_owned()),
                    ]),
                    values: HashMap::from([
                        (
                            ":b".to_owned(),
                            s(format!("{}#{shard:02}", codec::hour_of(&hour))),
                        ),
                        (":lo".to_owned(), s(lo.clone())),
                        (":hi".to_owned(), s(hi.clone())),
                    ]),
                    forward: true,
                    page_size: self.options.query_page_size,
                    consistent: false,
                    ..QuerySpec::default()
                };
                let items =
                    ddb::query_retried(&self.client, &self.counters, &self.options.retry, &spec)
                        .await?;
                for item in &items {
                    let sort = item
                        .string(codec::BUCKET_SORT)
                        .unwrap_or_default()
                        .to_owned();
                    out.push((sort, decode_event(item)?));
                }
            }
            hour += chrono::Duration::hours(1);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }
}

/// Whether a newest-first read of a stream's partition holds everything a load needs: the
/// snapshot first, then events down to the snapshot's version. Without a snapshot the whole
/// stream is read.
fn reached_the_snapshot(items: &[Item]) -> bool {
    let Some(snapshot) = items.first().filter(|i| codec::is_snapshot(*i)) else {
        return false;
    };
    let version = snapshot
        .number(codec::SNAPSHOT_VERSION)
        .and_then(|v| v.parse::<u64>().ok());
    let oldest = items
        .last()
        .filter(|i| !codec::is_snapshot(*i))
        .and_then(|i| i.number(codec::SEQ))
        .and_then(|q| q.parse::<u64>().ok());
    matches!((version, oldest), (Some(v), Some(q)) if q <= v + 1)
}

fn same(a: &Action, b: &Action) -> bool {
    match (a, b) {
        (Action::Idempotency, Action::Idempotency) => true,
        (Action::Stream(x), Action::Stream(y)) => x == y,
        _ => false,
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    #[tracing::instrument(
        skip_all,
        fields(streams = commit.streams.len(), events = commit.event_count(), command_id),
        err
    )]
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, StoreError> {
        validate_commit(&commit, MAX_COMMIT_ACTIONS)?;
        if let Some(idem) = &commit.idempotency {
            tracing::Span::current().record("command_id", idem.command_id.as_str());
        }
        let result = CommitResult {
            position: None,
            streams: commit
                .streams
                .iter()
                .map(|p| StreamVersion {
                    stream: p.stream.clone(),
                    version: p.expected_version + p.events.len() as u64,
                })
                .collect(),
            committed_at: Utc::now(),
        };
        if !self.options.index_on_append {
            return self.commit_once(&commit, &result).await;
        }
        let _serial = self.append_lock.lock().await;
        let outcome = self.commit_once(&commit, &result).await?;
        if let AppendOutcome::Committed(_) = &outcome {
            let envelopes: Vec<EventEnvelope> = commit
                .streams
                .iter()
                .flat_map(|p| {
                    p.events
                        .iter()
                        .enumerate()
                        .map(|(j, e)| envelope_of(&p.stream, p.expected_version + 1 + j as u64, e))
                })
                .collect();
            if !envelopes.is_empty() {
                // The commit is durable whatever happens here; failing the append now would make
                // the caller retry a write that succeeded. The events then wait for a re-index
                // (`FeedIndexer::index` is idempotent).
                if let Err(e) = self.indexer.index(envelopes).await {
                    tracing::error!(error = %e, "inline feed indexing failed after a commit");
                }
            }
        }
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(stream = %stream), err)]
    async fn load(&self, stream: &StreamRef) -> Result<LoadedStream, StoreError> {
        let (snapshot, events) = self.load_tail(stream).await?;
        let version = events
            .last()
            .map(|e| e.sequence)
            .or(snapshot.as_ref().map(|s| s.version))
            .unwrap_or(0);
        Ok(LoadedStream {
            snapshot,
            events,
            version,
        })
    }

    #[tracing::instrument(skip_all, fields(stream = %stream, from = versions.start(), to = versions.end()), err)]
    async fn read(
        &self,
        stream: &StreamRef,
        versions: RangeInclusive<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let (from, to) = versions.into_inner();
        self.range(stream, from, to).await
    }

    async fn feed(
        &self,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.indexer.read(after, limit).await
    }

    async fn feed_in_time(
        &self,
        range: FeedTimeRange<'_>,
    ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        self.indexer.read_between(range).await
    }

    async fn head(&self) -> Result<FeedCursor, StoreError> {
        self.indexer.head().await
    }

    #[tracing::instrument(skip_all, fields(command_id = %command_id), err)]
    async fn idempotency(
        &self,
        command_id: &str,
    ) -> Result<Option<(CommitResult, Idempotency)>, StoreError> {
        self.lookup(command_id).await
    }
}
