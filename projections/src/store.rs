//! The read-model store port.
//!
//! Read models are JSON documents grouped in collections. Each document carries zero or more
//! secondary index entries `(index, partition, sort)`, so that one document can be listed under
//! several keys ("orders of customer X, newest first"). The shape maps onto SQLite tables (one
//! table of documents, one of index entries) and onto DynamoDB (items plus GSIs).
//!
//! Projections never talk to a store directly: they get a [`DocTx`] inside
//! [`ReadModelStore::apply_batch`], which applies a batch of events atomically together with the
//! per-stream bookkeeping that makes duplicates, reordering and replays harmless.

use async_trait::async_trait;
use commands::{Consistency, EventEnvelope, FeedCursor, StreamRef};
use domain::{DecodeError, StreamType};
use serde_json::Value;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// One secondary index entry of a document: the document is listed in `index` under
/// `partition`, ordered by `sort` (compared as a plain string, so sort keys must be built to sort
/// lexicographically: fixed-width timestamps, zero-padded numbers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexEntry {
    pub index: &'static str,
    pub partition: String,
    pub sort: String,
}

impl IndexEntry {
    pub fn new(index: &'static str, partition: impl Into<String>, sort: impl Into<String>) -> Self {
        Self {
            index,
            partition: partition.into(),
            sort: sort.into(),
        }
    }
}

/// Where a document is stored: its collection, and its key within the collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocKey<'a> {
    pub collection: &'a str,
    pub key: &'a str,
}

impl<'a> DocKey<'a> {
    pub fn new(collection: &'a str, key: &'a str) -> Self {
        Self { collection, key }
    }

    /// The same address as owned strings, for maps keyed by `(collection, key)`.
    pub fn owned(self) -> (String, String) {
        (self.collection.to_owned(), self.key.to_owned())
    }
}

/// The result of a read-model store call.
pub type ReadModelResult<T> = Result<T, ReadModelError>;

/// A read-model document as a transaction holds it: in the type of the projection that reads
/// it (see [`crate::docs::Doc`]), encoded back to JSON text with its index entries
/// once, when the batch ends.
pub trait Document: Any + Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The document's JSON text and index entries.
    fn encode(&self) -> Result<EncodedDoc, serde_json::Error>;
}

/// A document ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedDoc {
    pub body: String,
    pub index: Vec<IndexEntry>,
}

impl EncodedDoc {
    /// `body` as JSON text, listed under `index`.
    pub fn from_json(body: &Value, index: Vec<IndexEntry>) -> Self {
        Self {
            body: body.to_string(),
            index,
        }
    }

    /// Encodes `doc`, stored at (collection, key), naming it when that fails.
    pub fn of(doc: &dyn Document, collection: &str, key: &str) -> Result<Self, ReadModelError> {
        doc.encode()
            .map_err(|e| corrupt(collection, key, format!("cannot encode: {e}")))
    }
}

/// Decodes a stored document from its JSON text into the type its reader wants.
pub type Decode<'a> = dyn Fn(&str) -> Result<Box<dyn Document>, ProjectionError> + 'a;

/// A document that a transaction holds and lends out ([`DocTx::get`]); `None` when there is none.
pub type HeldDoc<'a> = Option<&'a mut (dyn Document + 'static)>;

/// A document already encoded is a document too (the out-of-band [`ReadModelStore::put_doc`]).
impl Document for EncodedDoc {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn encode(&self) -> Result<EncodedDoc, serde_json::Error> {
        Ok(self.clone())
    }
}

/// Document access inside one atomic batch: the read-model transaction port.
///
/// Contract (the conformance suite checks it on every adapter):
/// - `get` gives the document as the batch sees it (its own earlier writes included), decoded
///   with `decode` when the batch first reads it. The transaction holds it from then on, and
///   changes made through the returned reference are part of the batch.
/// - `put` replaces the document and its whole set of index entries (entries it no longer
///   lists are removed); `delete` removes it and its entries (a missing document is no error).
/// - When the batch ends each document it holds is encoded once and written only if it differs
///   from what is stored. Nothing is visible to other readers until the batch commits, and
///   nothing is written at all when it fails.
///
/// Each adapter holds these typed documents itself (no layer of projections wraps the
/// transaction); queries read committed documents through [`ReadModelStore::query`].
pub trait DocTx {
    fn get(&mut self, at: DocKey<'_>, decode: &Decode<'_>) -> Result<HeldDoc<'_>, ProjectionError>;
    fn put(&mut self, at: DocKey<'_>, doc: Box<dyn Document>) -> ReadModelResult<()>;
    fn delete(&mut self, at: DocKey<'_>) -> ReadModelResult<()>;
}

/// A read-model definition: which events it consumes and how each one changes its documents.
///
/// Contract:
/// - `apply` is deterministic and uses only the event and the documents it reads through `tx`;
///   it never re-runs business rules (events carry the derived values).
/// - Sequence bookkeeping is per stream, so a projection consumes whole stream types
///   ([`Projection::streams`]): an event type it does not care about is still passed to
///   `apply`, which ignores it. Filtering single event types out would look like a gap.
/// - Events of different streams may arrive in any relative order (AWS delivery is unordered;
///   gap filling only restores the order within a stream), so documents fed by several streams
///   must end up the same whatever the interleaving.
/// - Unknown event types of a handled stream are ignored (forward compatibility).
pub trait Projection: Send + Sync + 'static {
    /// Stable name: "catalog" | "order_history" | "notifications" | "support".
    fn name(&self) -> &'static str;
    /// Every collection this projection writes; `reset` (rebuild) drops exactly these.
    fn collections(&self) -> &'static [&'static str];
    /// Every index its documents are listed in. With blue/green generations, reads of these
    /// collections and indexes go to the projection's live generation.
    fn indexes(&self) -> &'static [&'static str];
    /// Its indexes with few partitions that take many writes (every order under one date
    /// partition, a handful of statuses): an adapter with per-partition write limits spreads
    /// their entries over several shards. A subset of [`Projection::indexes`].
    fn hot_indexes(&self) -> &'static [&'static str] {
        &[]
    }
    /// The version of what `apply` makes. Bump it when a change needs the read model built
    /// again: a server that finds an older version stored rebuilds it in the background (blue/
    /// green) and serves the old generation until the new one has caught up.
    fn version(&self) -> u32 {
        1
    }
    /// The stream types it consumes, see the trait contract.
    fn streams(&self) -> &'static [StreamType];
    /// Whether `event` is one it consumes.
    fn handles(&self, event: &EventEnvelope) -> bool {
        self.streams().contains(&event.stream_type)
    }
    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError>;
}

/// What `apply_batch` did.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    /// Every event was applied or skipped as a duplicate; the checkpoint (if given) was written.
    Applied { applied: usize, skipped: usize },
    /// The event at the front of `remaining` is ahead of its stream: the last applied sequence
    /// of `stream` is `expected - 1` but the event has sequence `got`. Everything before it was
    /// committed (`applied` / `skipped` count those); `remaining` (that event and everything after
    /// it, in the order given) was not touched, and the checkpoint was NOT written. The caller
    /// fills `expected..=got-1` from the event store and retries with the filled events in front.
    Gap {
        stream: StreamRef,
        expected: u64,
        got: u64,
        applied: usize,
        skipped: usize,
        remaining: Vec<EventEnvelope>,
    },
}

impl ApplyOutcome {
    pub fn applied(&self) -> usize {
        match self {
            ApplyOutcome::Applied { applied, .. } | ApplyOutcome::Gap { applied, .. } => *applied,
        }
    }

    pub fn skipped(&self) -> usize {
        match self {
            ApplyOutcome::Applied { skipped, .. } | ApplyOutcome::Gap { skipped, .. } => *skipped,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// Worth retrying: a busy database, throttling, a network error.
    #[error("read model store unavailable: {0}")]
    Unavailable(String),
    /// A stored document or record could not be read back.
    #[error("corrupt read model record {collection}/{key}: {reason}")]
    Corrupt {
        collection: String,
        key: String,
        reason: String,
    },
    /// A projection rejected an event; the batch was rolled back. Retrying gives the same answer
    /// until the projection (or the event) is fixed, so workers retry with backoff, never skip.
    #[error("projection {projection} failed on event {event_id} ({event_type}): {source}")]
    Projection {
        projection: &'static str,
        event_id: Uuid,
        event_type: String,
        #[source]
        source: Box<ProjectionError>,
    },
    /// Anything else; the message is for logs only.
    #[error("read model store failure: {0}")]
    Internal(String),
}

impl ReadModelError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ReadModelError::Unavailable(_))
    }
}

/// [`ReadModelError::Corrupt`] for the record stored at (collection, key).
pub fn corrupt(collection: &str, key: &str, reason: impl ToString) -> ReadModelError {
    ReadModelError::Corrupt {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The payload does not fit the event type (or has a newer version than this build knows).
    #[error("cannot decode event: {0}")]
    Decode(#[from] DecodeError),
    /// A document the projection wrote earlier does not deserialize any more.
    #[error("corrupt document {collection}/{key}: {reason}")]
    CorruptDoc {
        collection: String,
        key: String,
        reason: String,
    },
    /// A document could not be serialized.
    #[error("cannot encode document {collection}/{key}: {reason}")]
    Encode {
        collection: String,
        key: String,
        reason: String,
    },
    /// The store failed underneath the projection.
    #[error(transparent)]
    Store(#[from] ReadModelError),
}

/// A query of one index partition (see [`ReadModelStore::query`]): the documents listed under
/// `(index, partition)` whose sort key is within `[from, to]` (inclusive; `None` is open),
/// ascending by sort key unless `descending`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub index: &'a str,
    pub partition: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub descending: bool,
    pub limit: usize,
}

impl<'a> Query<'a> {
    /// The whole partition, ascending, at most `limit`.
    pub fn new(index: &'a str, partition: &'a str, limit: usize) -> Self {
        Self {
            index,
            partition,
            from: None,
            to: None,
            descending: false,
            limit,
        }
    }

    /// The same, newest (greatest sort key) first.
    pub fn descending(self) -> Self {
        Self {
            descending: true,
            ..self
        }
    }

    /// The same, within `[from, to]` (inclusive; `None` is open).
    pub fn between(self, from: Option<&'a str>, to: Option<&'a str>) -> Self {
        Self { from, to, ..self }
    }
}

/// What [`ReadModelStore::apply_batch`] applies: events for one projection, in the order given,
/// and the feed cursor they reach.
pub struct EventBatch {
    pub projection: Arc<dyn Projection>,
    pub events: Vec<EventEnvelope>,
    /// Written with the batch when the whole batch is consumed (see the port's contract).
    pub checkpoint: Option<FeedCursor>,
}

impl EventBatch {
    /// `events` for `projection`, with no checkpoint to write.
    pub fn new(projection: Arc<dyn Projection>, events: Vec<EventEnvelope>) -> Self {
        Self {
            projection,
            events,
            checkpoint: None,
        }
    }

    /// The same, writing `checkpoint` when the whole batch is consumed.
    pub fn with_checkpoint(self, checkpoint: FeedCursor) -> Self {
        Self {
            checkpoint: Some(checkpoint),
            ..self
        }
    }
}

/// The read-model store port.
///
/// Contract (checked by the conformance suite in `testsuite::conformance`):
/// - `apply_batch` applies the events for one projection in the order given, atomically with
///   its bookkeeping, in ONE transaction. For each event: skip it when its sequence is `<=` the
///   last applied sequence recorded for (projection, stream) [a duplicate]; when it is
///   `> last + 1` stop and return [`ApplyOutcome::Gap`] without applying anything from that event
///   on (the events before it are committed); otherwise apply it and record its sequence.
///   `checkpoint` (the feed cursor reached) is written in the same transaction when given and
///   the whole batch was consumed; checkpoints never move backwards (the stored cursor becomes
///   the larger of the two in every partition). When the projection fails
///   nothing of the batch is written.
/// - `get` / `query` read committed documents only.
/// - `query` returns the documents having an entry `(index, partition)` whose sort key is within
///   `[from, to]` (inclusive; `None` is open), ordered by sort key (ties by collection and key),
///   descending when asked, at most `limit`.
/// - `put_doc` is an out-of-band write of one encoded document (for example marking a
///   notification delivered); it replaces the document and its index entries like [`DocTx::put`].
/// - `reset` drops the projection's collections (documents and their index entries), its applied
///   sequences and its checkpoint. Collections the projection does not list survive.
#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    async fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome>;
    /// The feed cursor the projection has reached ([`FeedCursor::start`] when it never ran).
    async fn checkpoint(&self, projection: &str) -> ReadModelResult<FeedCursor>;
    /// The last sequence of `stream` applied by the projection (0 when none).
    async fn last_applied(&self, projection: &str, stream: &StreamRef) -> ReadModelResult<u64>;
    async fn get(&self, collection: &str, key: &str) -> ReadModelResult<Option<Value>>;
    async fn query(&self, query: Query<'_>) -> ReadModelResult<Vec<Value>>;
    async fn put_doc(&self, at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<()>;
    async fn reset(&self, projection: &dyn Projection) -> ReadModelResult<()>;
    /// Makes what earlier writes overwrote or deleted unrecoverable from the storage itself
    /// (old page images, freed space), after a batch that erased personal data. A store that
    /// keeps nothing of the kind does nothing.
    async fn purge(&self) -> ReadModelResult<()> {
        Ok(())
    }
}

/// Read-your-writes: whether `projection`'s read model reflects the write behind `token`, that is,
/// it has applied each stream of the token that it consumes up to the token's version. It reads
/// only the per-stream bookkeeping every adapter keeps, so it means the same on every backend.
pub async fn reflects(
    models: &dyn ReadModelStore,
    projection: &dyn Projection,
    token: &Consistency,
) -> Result<bool, ReadModelError> {
    let consumed = projection.streams();
    for written in token
        .streams()
        .iter()
        .filter(|s| consumed.contains(&s.stream.stream_type))
    {
        if models
            .last_applied(projection.name(), &written.stream)
            .await?
            < written.version
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A stored document with its index entries as `(index, partition, sort)`; used to compare whole
/// stores (rebuild equals incremental).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub body: Value,
    pub index: BTreeSet<(String, String, String)>,
}

/// Every document of a store keyed by `(collection, key)`.
pub type Dump = BTreeMap<(String, String), StoredDoc>;

/// What an adapter provides inside one transaction so that [`apply_events`] can run the shared
/// duplicate / gap / apply logic. The transaction is one projection's: the sequences it reads and
/// records are that projection's bookkeeping.
pub trait BatchTx: DocTx {
    /// The recorded last sequence of `stream`, 0 when none. Called at most once per stream per
    /// batch.
    fn last_applied(&mut self, stream: &StreamRef) -> ReadModelResult<u64>;
    /// Records the new last sequence; called once per stream at the end of the batch.
    fn record_applied(&mut self, stream: &StreamRef, sequence: u64) -> ReadModelResult<()>;
}

/// The duplicate / gap / apply loop shared by every adapter: call it inside the adapter's
/// transaction of `projection`, then flush and commit (writing the checkpoint only on `Applied`).
///
/// A projection error aborts with [`ReadModelError::Projection`] (or the underlying store error
/// when the projection only passed one through); the caller must then roll back.
pub fn apply_events<T: BatchTx>(
    projection: &dyn Projection,
    mut events: Vec<EventEnvelope>,
    tx: &mut T,
) -> Result<ApplyOutcome, ReadModelError> {
    let name = projection.name();
    // stream type -> stream id -> (last applied, changed in this batch)
    let mut last: HashMap<StreamType, HashMap<String, (u64, bool)>> = HashMap::new();
    let mut applied = 0;
    let mut skipped = 0;
    let mut gap = None;

    for (i, event) in events.iter().enumerate() {
        let by_id = last.entry(event.stream_type).or_default();
        if !by_id.contains_key(event.stream_id.as_str()) {
            let seq = tx.last_applied(&event.stream())?;
            by_id.insert(event.stream_id.clone(), (seq, false));
        }
        // Present: inserted just above when it was missing.
        let Some(entry) = by_id.get_mut(event.stream_id.as_str()) else {
            return Err(ReadModelError::Internal("stream bookkeeping lost".into()));
        };
        if event.sequence <= entry.0 {
            skipped += 1;
            tracing::trace!(
                projection = name,
                stream = %event.stream(),
                sequence = event.sequence,
                "duplicate event skipped"
            );
            continue;
        }
        if event.sequence > entry.0 + 1 {
            gap = Some((i, entry.0 + 1));
            break;
        }
        projection.apply(event, tx).map_err(|e| match e {
            ProjectionError::Store(store) => store,
            other => ReadModelError::Projection {
                projection: name,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                source: Box::new(other),
            },
        })?;
        *entry = (event.sequence, true);
        applied += 1;
    }

    for (stream_type, by_id) in last {
        for (stream_id, (seq, changed)) in by_id {
            if changed {
                tx.record_applied(&StreamRef::new(stream_type, stream_id), seq)?;
            }
        }
    }

    Ok(match gap {
        None => ApplyOutcome::Applied { applied, skipped },
        Some((i, expected)) => {
            let remaining = events.split_off(i);
            // `remaining` starts with the event at `i`, which exists because `i` came from
            // enumerating `events`.
            let (stream, got) = match remaining.first() {
                Some(e) => (e.stream(), e.sequence),
                None => return Err(ReadModelError::Internal("gap past the batch end".into())),
            };
            ApplyOutcome::Gap {
                stream,
                expected,
                got,
                applied,
                skipped,
                remaining,
            }
        }
    })
}
