//! The event-store port. Both adapters (SQLite and DynamoDB) implement [`EventStore`] and pass
//! the shared conformance suite in [`crate::conformance`].

use crate::feed::FeedCursor;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::StreamType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::ops::RangeInclusive;
use std::sync::Arc;
use uuid::Uuid;

use crate::Payload;

/// Identifies one stream: a stream type and the aggregate id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamRef {
    pub stream_type: StreamType,
    pub stream_id: String,
}

impl StreamRef {
    pub fn new(stream_type: StreamType, stream_id: impl Into<String>) -> Self {
        Self {
            stream_type,
            stream_id: stream_id.into(),
        }
    }

    /// The DynamoDB partition key form, `order#<id>`.
    pub fn key(&self) -> String {
        format!("{}#{}", self.stream_type.as_str(), self.stream_id)
    }
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.stream_type.as_str(), self.stream_id)
    }
}

/// Who issued a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ActorSchema))]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

/// Envelope metadata, carried unchanged from the command to every event it causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = EventMetadataSchema))]
pub struct Metadata {
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub command_id: Option<String>,
    /// The W3C `traceparent` of the request span that caused the event ([`crate::trace`]).
    /// Absent from events written before it existed, and then not written at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// One stored event: the envelope of DESIGN.md plus its global feed position when known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = EventEnvelopeSchema))]
pub struct EventEnvelope {
    /// Position in the durable global feed. Always set by `feed`; set by the embedded store on
    /// every read; `None` where the backend assigns positions asynchronously (DynamoDB loads).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub global_position: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0190a5c2-7d1e-7c3a-9f00-4b1d2e3f4a5b"))]
    pub event_id: Uuid,
    pub stream_type: StreamType,
    pub stream_id: String,
    /// Per stream, from 1, no gaps.
    pub sequence: u64,
    pub event_type: String,
    pub event_version: u32,
    pub occurred_at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, serde_json::Value>))]
    pub payload: Payload,
    pub metadata: Metadata,
}

impl EventEnvelope {
    pub fn stream(&self) -> StreamRef {
        StreamRef::new(self.stream_type, self.stream_id.clone())
    }
}

/// An event about to be appended; the store assigns the sequence and position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub payload: Payload,
    pub metadata: Metadata,
}

/// A serialized aggregate state at a stream version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream version (sequence of the last event folded into `state`).
    pub version: u64,
    /// The aggregate's `SNAPSHOT_VERSION`; a mismatch makes the loader ignore the snapshot.
    pub schema_version: u32,
    pub state: Value,
}

/// The part of a commit that touches one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream: StreamRef,
    /// The stream's current version as the caller saw it (0 for a new stream).
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    /// Written in the same transaction, at `expected_version + events.len()`.
    pub snapshot: Option<Snapshot>,
}

/// What is remembered about a command id, so a retry gets the first answer back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The caller's key, for example `http:<subject>:<Idempotency-Key>` or `stripe:<event id>`.
    pub command_id: String,
    /// A digest of the request, so the same key with a different request can be told apart.
    pub fingerprint: String,
    /// Opaque caller data returned on a replay (for example the response body).
    pub outcome: Value,
}

/// A list of stream appends that is written all or nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    pub streams: Vec<StreamAppend>,
    pub idempotency: Option<Idempotency>,
}

impl Commit {
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// The writes the commit needs: one per event, per snapshot and for the idempotency record.
    pub fn write_count(&self) -> usize {
        let snapshots = self.streams.iter().filter(|s| s.snapshot.is_some()).count();
        self.event_count() + snapshots + usize::from(self.idempotency.is_some())
    }
}

/// The new version of one stream after a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamVersion {
    pub stream: StreamRef,
    pub version: u64,
}

/// What a successful commit produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitResult {
    /// The highest global position written, when the backend knows it at commit time
    /// (the embedded store does; DynamoDB assigns positions in the relay).
    pub position: Option<u64>,
    pub streams: Vec<StreamVersion>,
    pub committed_at: DateTime<Utc>,
}

/// The answer to `append`.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// The commit was written.
    Committed(CommitResult),
    /// The command id was seen before: nothing was written; this is the first commit's record.
    Duplicate {
        result: CommitResult,
        idempotency: Idempotency,
    },
}

impl AppendOutcome {
    pub fn result(&self) -> &CommitResult {
        match self {
            AppendOutcome::Committed(r) => r,
            AppendOutcome::Duplicate { result, .. } => result,
        }
    }
}

/// A stream as loaded: the latest snapshot (if any) and every event after it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadedStream {
    pub snapshot: Option<Snapshot>,
    pub events: Vec<EventEnvelope>,
    /// The stream's current version (0 when it does not exist).
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An expected version did not match; nothing was written.
    #[error("version conflict on {stream}: expected {expected}, found {actual:?}")]
    Conflict {
        stream: StreamRef,
        expected: u64,
        /// The actual version when the backend reports it.
        actual: Option<u64>,
    },
    /// The commit itself is malformed (empty, a stream twice, too large, bad snapshot).
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    /// A failure worth retrying (throttling, a busy database, a network error).
    #[error("store temporarily unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the message is for logs only.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A predicate over feed events (see [`EventStore::feed_filtered`]).
pub type EventFilter<'a> = dyn Fn(&EventEnvelope) -> bool + Send + Sync + 'a;

/// A filtered read of one feed page ([`EventStore::feed_filtered`]).
#[derive(Clone, Copy)]
pub struct FeedFilter<'a> {
    /// The page starts after this cursor.
    pub after: &'a FeedCursor,
    /// The page holds at most this many events, kept or not.
    pub limit: usize,
    /// The events of the page to return.
    pub keep: &'a EventFilter<'a>,
}

/// One feed page, filtered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilteredPage {
    /// The page's events that the filter kept, in feed order.
    pub events: Vec<EventEnvelope>,
    /// The cursor past every event of the page, kept or not; `None` when the page was empty.
    pub next: Option<FeedCursor>,
    /// How many events the page held.
    pub read: usize,
}

impl FilteredPage {
    /// The page `feed(after, ..)` returned, filtered.
    pub fn from_page(after: &FeedCursor, page: Vec<EventEnvelope>, keep: &EventFilter<'_>) -> Self {
        Self {
            next: (!page.is_empty()).then(|| after.after(&page)),
            read: page.len(),
            events: page.into_iter().filter(|e| keep(e)).collect(),
        }
    }

    /// Reads the page `feed(read.after, read.limit)` and filters it: what
    /// [`EventStore::feed_filtered`] returns unless an adapter knows a faster way.
    pub async fn of_feed<S: EventStore + ?Sized>(
        store: &S,
        read: FeedFilter<'_>,
    ) -> Result<Self, StoreError> {
        let page = store.feed(read.after, read.limit).await?;
        Ok(Self::from_page(read.after, page, read.keep))
    }
}

/// A page of the feed within a time range, read by [`EventStore::feed_in_time`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedTimeRange<'a> {
    /// The page starts after this cursor.
    pub after: &'a FeedCursor,
    /// The earliest `occurred_at` kept.
    pub from: DateTime<Utc>,
    /// The latest `occurred_at` kept.
    pub to: DateTime<Utc>,
    /// At most this many events.
    pub limit: usize,
}

/// The event-store port.
///
/// Contract (checked by [`crate::conformance`]):
/// - `append` is all or nothing across every stream of the commit. A wrong expected version writes
///   nothing and returns `Conflict`. A command id seen before writes nothing and returns
///   `Duplicate` with the first commit's result, whatever the new commit holds. A commit with no
///   events but an idempotency record only records the command id.
/// - `load` returns the latest snapshot and every event after it, reading every page.
/// - `read` returns the events whose sequence is within `versions`, consistently (after an `append`
///   returned, its events are visible).
/// - `feed` returns the events after the cursor `after`, at most `limit`, each with
///   `global_position` set ([`crate::feed`]: its partition and its position there). Each
///   partition's events come in position order with no gaps, so a reader that moves its cursor
///   past every event it got never misses one; partitions are merged by commit time, then
///   partition, then position. A new reader starts at [`FeedCursor::start`].
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, StoreError>;
    async fn load(&self, stream: &StreamRef) -> Result<LoadedStream, StoreError>;
    async fn read(
        &self,
        stream: &StreamRef,
        versions: RangeInclusive<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError>;
    async fn feed(
        &self,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError>;
    /// Reads the same page as `feed(read.after, read.limit)` but returns only the events
    /// `read.keep` accepts, with the cursor past the whole page, so a consumer interested in a
    /// few event types can move past the rest without copying them. Adapters with an in-memory
    /// tail override it.
    async fn feed_filtered(&self, read: FeedFilter<'_>) -> Result<FilteredPage, StoreError> {
        FilteredPage::of_feed(self, read).await
    }
    /// Analysts' time ranges: the events `feed` would return after `range.after` whose
    /// `occurred_at` is within `[range.from, range.to]`, in feed order, at most `range.limit`,
    /// read through a time index; `None` when the backend has no index for this range (the
    /// caller then filters the feed). An empty page means there is nothing more up to the
    /// current head.
    async fn feed_in_time(
        &self,
        _range: FeedTimeRange<'_>,
    ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        Ok(None)
    }
    /// The cursor past every event `feed` can return right now.
    async fn head(&self) -> Result<FeedCursor, StoreError>;
    /// Looks up a command id without writing anything.
    async fn idempotency(
        &self,
        command_id: &str,
    ) -> Result<Option<(CommitResult, Idempotency)>, StoreError>;
    /// Fires after every commit so feed tailers wake at once. `None` when the backend cannot
    /// notify (consumers then poll).
    fn commit_notifier(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// Implements [`EventStore`] for a wrapper that hands the methods named in `forward [...]` to an
/// inner store unchanged, so the wrapper spells out only the methods it changes (written as in
/// any `#[async_trait]` impl, inside the braces).
///
/// ```
/// use commands::{AppendOutcome, Commit, EventStore, StoreError};
///
/// struct Logged<S> {
///     inner: S,
/// }
///
/// commands::forward_event_store! {
///     impl[S: EventStore] for Logged<S>, to |s| &s.inner,
///     forward [load, read, feed, feed_filtered, feed_in_time, head, idempotency, commit_notifier] {
///         async fn append(&self, commit: Commit) -> Result<AppendOutcome, StoreError> {
///             tracing::info!(events = commit.event_count(), "append");
///             self.inner.append(commit).await
///         }
///     }
/// }
/// ```
///
/// `to |s| expr` borrows the inner store from `s: &Self`. Every trait method must be either
/// forwarded or written out; the compiler reports any that is neither or both.
#[macro_export]
macro_rules! forward_event_store {
    (
        impl[$($generics:tt)*] for $ty:ty, to |$s:ident| $inner:expr,
        forward [$($method:ident),* $(,)?] { $($own:tt)* }
    ) => {
        $crate::forward_event_store!(@next ([$($generics)*] $ty, $s, $inner)
            [$($method)*] { $($own)* } {});
    };
    // One arm per async trait method, naming its signature: `@async` adds the forwarding body.
    (@next $ctx:tt [append $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            append(commit: $crate::Commit) -> $crate::AppendOutcome);
    };
    (@next $ctx:tt [load $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            load(stream: &$crate::StreamRef) -> $crate::LoadedStream);
    };
    (@next $ctx:tt [read $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            read(stream: &$crate::StreamRef, versions: ::std::ops::RangeInclusive<u64>)
                -> Vec<$crate::EventEnvelope>);
    };
    (@next $ctx:tt [feed $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            feed(after: &$crate::FeedCursor, limit: usize) -> Vec<$crate::EventEnvelope>);
    };
    (@next $ctx:tt [feed_filtered $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            feed_filtered(read: $crate::FeedFilter<'_>) -> $crate::FilteredPage);
    };
    (@next $ctx:tt [feed_in_time $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            feed_in_time(range: $crate::FeedTimeRange<'_>) -> Option<Vec<$crate::EventEnvelope>>);
    };
    (@next $ctx:tt [head $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            head() -> $crate::FeedCursor);
    };
    (@next $ctx:tt [idempotency $($rest:ident)*] $own:tt $done:tt) => {
        $crate::forward_event_store!(@async $ctx [$($rest)*] $own $done
            idempotency(command_id: &str) -> Option<($crate::CommitResult, $crate::Idempotency)>);
    };
    // The one method that is not async.
    (@next ($g:tt $ty:ty, $s:ident, $inner:expr) [commit_notifier $($rest:ident)*] $own:tt { $($done:tt)* }) => {
        $crate::forward_event_store!(@next ($g $ty, $s, $inner) [$($rest)*] $own { $($done)*
            fn commit_notifier(&self) -> Option<::std::sync::Arc<$crate::__macro_support::Notify>> {
                let $s = self;
                ($inner).commit_notifier()
            }
        });
    };
    // Adds to `$done` an async method that hands its arguments to the inner store and returns
    // `Result<$out, StoreError>`, then goes on with the rest.
    (@async ($g:tt $ty:ty, $s:ident, $inner:expr) $rest:tt $own:tt { $($done:tt)* }
        $method:ident($($arg:ident: $arg_ty:ty),*) -> $out:ty) => {
        $crate::forward_event_store!(@next ($g $ty, $s, $inner) $rest $own { $($done)*
            async fn $method(&self, $($arg: $arg_ty),*) -> Result<$out, $crate::StoreError> {
                let $s = self;
                ($inner).$method($($arg),*).await
            }
        });
    };
    // Every named method is written: emit the impl, the forwarded methods and the wrapper's own.
    (@next ([$($generics:tt)*] $ty:ty, $s:ident, $inner:expr) [] { $($own:tt)* } { $($done:tt)* }) => {
        #[$crate::__macro_support::async_trait]
        impl<$($generics)*> $crate::EventStore for $ty {
            $($done)*
            $($own)*
        }
    };
}

/// Turns stored events of old schema versions into current ones. Applied on every read path by
/// [`UpcastingStore`], so `load`, `read`, `feed`, replay and rebuild all see current shapes.
pub trait Upcaster: Send + Sync + 'static {
    fn upcast(&self, event: EventEnvelope) -> EventEnvelope;
    /// Whether `event` is already in its current shape (`upcast` would return it unchanged).
    /// The default, `false`, is always safe; it only costs a copy in `feed_filtered`.
    fn is_current(&self, _event: &EventEnvelope) -> bool {
        false
    }
}

/// What a decorator does to events on their way into and out of a store: [`MappedStore`]
/// applies it on every path (append, load, read, feed, time ranges), so a decorator states only
/// the change. [`UpcastingStore`] and [`crate::PersonalDataStore`] are the two in use.
#[async_trait]
pub trait EventMapper: Send + Sync + 'static {
    /// Changes a commit before it is stored. Unchanged by default.
    async fn before_append(&self, _commit: &mut Commit) -> Result<(), StoreError> {
        Ok(())
    }
    /// Changes the events a read returns.
    async fn map(&self, events: Vec<EventEnvelope>) -> Result<Vec<EventEnvelope>, StoreError>;
    /// Changes the snapshot a load returns. Unchanged by default.
    async fn map_snapshot(
        &self,
        _stream: &StreamRef,
        _snapshot: &mut Snapshot,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether a feed filter keeps `event`. By default the filter judges the event as stored.
    fn judge(&self, event: &EventEnvelope, keep: &EventFilter<'_>) -> bool {
        keep(event)
    }
}

/// A store decorator that hands every commit and every event read through an [`EventMapper`].
pub struct MappedStore<S, M> {
    inner: S,
    mapper: M,
}

impl<S, M> MappedStore<S, M> {
    pub fn new(inner: S, mapper: M) -> Self {
        Self { inner, mapper }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

forward_event_store! {
    impl[S: EventStore, M: EventMapper] for MappedStore<S, M>, to |s| &s.inner,
    forward [head, idempotency, commit_notifier] {
        async fn append(&self, mut commit: Commit) -> Result<AppendOutcome, StoreError> {
            self.mapper.before_append(&mut commit).await?;
            self.inner.append(commit).await
        }
        async fn load(&self, stream: &StreamRef) -> Result<LoadedStream, StoreError> {
            let mut loaded = self.inner.load(stream).await?;
            if let Some(snapshot) = loaded.snapshot.as_mut() {
                self.mapper.map_snapshot(stream, snapshot).await?;
            }
            loaded.events = self.mapper.map(std::mem::take(&mut loaded.events)).await?;
            Ok(loaded)
        }
        async fn read(
            &self,
            stream: &StreamRef,
            versions: RangeInclusive<u64>,
        ) -> Result<Vec<EventEnvelope>, StoreError> {
            self.mapper.map(self.inner.read(stream, versions).await?).await
        }
        async fn feed(&self, after: &FeedCursor, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
            self.mapper.map(self.inner.feed(after, limit).await?).await
        }
        async fn feed_filtered(&self, read: FeedFilter<'_>) -> Result<FilteredPage, StoreError> {
            let judged = |e: &EventEnvelope| self.mapper.judge(e, read.keep);
            let mut page = self.inner.feed_filtered(FeedFilter { keep: &judged, ..read }).await?;
            page.events = self.mapper.map(std::mem::take(&mut page.events)).await?;
            Ok(page)
        }
        async fn feed_in_time(
            &self,
            range: FeedTimeRange<'_>,
        ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
            match self.inner.feed_in_time(range).await? {
                Some(events) => Ok(Some(self.mapper.map(events).await?)),
                None => Ok(None),
            }
        }
    }
}

/// A store decorator that upcasts every event it returns.
pub type UpcastingStore<S> = MappedStore<S, Arc<dyn Upcaster>>;

#[async_trait]
impl EventMapper for Arc<dyn Upcaster> {
    async fn map(&self, events: Vec<EventEnvelope>) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(events.into_iter().map(|e| self.upcast(e)).collect())
    }
    /// The filter judges the upcast event, as a reader of `feed` would see it.
    fn judge(&self, event: &EventEnvelope, keep: &EventFilter<'_>) -> bool {
        if self.is_current(event) {
            keep(event)
        } else {
            keep(&self.upcast(event.clone()))
        }
    }
}

forward_event_store! {
    impl[T: EventStore + ?Sized] for Arc<T>, to |s| &**s,
    forward [append, load, read, feed, feed_filtered, feed_in_time, head, idempotency, commit_notifier] {}
}

/// Checks the shape rules every adapter enforces before touching storage.
pub fn validate_commit(commit: &Commit, max_actions: usize) -> Result<(), StoreError> {
    if commit.streams.is_empty() && commit.idempotency.is_none() {
        return Err(StoreError::InvalidCommit("commit has no streams".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &commit.streams {
        if !seen.insert(&s.stream) {
            return Err(StoreError::InvalidCommit(format!(
                "stream {} appears twice",
                s.stream
            )));
        }
        if s.events.is_empty() {
            return Err(StoreError::InvalidCommit(format!(
                "stream {} has no events",
                s.stream
            )));
        }
        if s.stream.stream_id.is_empty() {
            return Err(StoreError::InvalidCommit("empty stream id".into()));
        }
        if let Some(snap) = &s.snapshot {
            let at = s.expected_version + s.events.len() as u64;
            if snap.version != at {
                return Err(StoreError::InvalidCommit(format!(
                    "snapshot of {} at version {} but the commit ends at {}",
                    s.stream, snap.version, at
                )));
            }
        }
    }
    let actions = commit.write_count();
    if actions > max_actions {
        return Err(StoreError::InvalidCommit(format!(
            "commit needs {actions} writes, the limit is {max_actions}"
        )));
    }
    Ok(())
}

/// Every adapter accepts at least this many writes (events + snapshots + idempotency) per
/// commit: DynamoDB's TransactWriteItems limit.
pub const MAX_COMMIT_ACTIONS: usize = 100;
