//! Ports of the AWS fan-out: the change source the relay reads (DynamoDB Streams), the
//! relay's per-shard checkpoints, the durable feed it maintains, the event publisher it writes
//! to (EventBridge), and the queue the consumers read (SQS).
//!
//! Delivery through these ports is at least once and in any order: every contract below allows
//! duplicates, and consumers make them harmless (per-stream applied sequences in the read
//! models, command ids in the process managers).

use crate::store::{EventEnvelope, StoreError};
use async_trait::async_trait;
use std::cmp::Ordering;
use std::time::Duration;

/// A failure of a fan-out adapter, classified once by the adapter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FanoutError {
    /// Worth retrying later (throttling, a 5xx, a network error).
    #[error("fan-out temporarily unavailable: {0}")]
    Transient(String),
    /// Retrying the same call gives the same answer (a bug, a missing resource, bad data).
    #[error("fan-out failure: {0}")]
    Permanent(String),
    /// A shard cursor is no longer valid (expired or trimmed); reopen from the checkpoint.
    #[error("shard cursor expired: {0}")]
    CursorExpired(String),
    /// A compare-and-set on a checkpoint found another value: another relay owns the shard.
    #[error("checkpoint of shard {shard} was moved by someone else")]
    CheckpointConflict { shard: String },
}

impl FanoutError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FanoutError::Transient(_) | FanoutError::CursorExpired(_)
        )
    }
}

impl From<StoreError> for FanoutError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            FanoutError::Transient(e.to_string())
        } else {
            FanoutError::Permanent(e.to_string())
        }
    }
}

/// One shard of a change stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Opaque and unique across the source's streams; also the checkpoint key.
    pub id: String,
    /// The shard this one was split from, in the same id space. Its records come first.
    pub parent: Option<String>,
}

/// A record of a shard: its sequence number and, when the record is an inserted event, the
/// event. Records that are not events (a modify or remove, which the event store never does)
/// carry `None`; the relay only moves its checkpoint past them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// Decimal digits; compare with [`compare_sequence_numbers`], not as text.
    pub sequence_number: String,
    pub event: Option<EventEnvelope>,
}

/// Where a reader stands in a shard: opaque, only valid for a while (see
/// [`FanoutError::CursorExpired`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCursor(pub String);

/// One read of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPage {
    /// In shard order (per stream, the order of the commits).
    pub records: Vec<ChangeRecord>,
    /// Where to read next; `None` once the shard is closed and every record was returned.
    pub next: Option<ShardCursor>,
}

/// A change stream of the event store (DynamoDB Streams on AWS).
///
/// Contract:
/// - `shards` lists every shard still readable, parents included while they are listed.
/// - `open(shard, after)` gives a cursor at the first record after sequence number `after`, or at
///   the oldest record still kept when `after` is `None`.
/// - `read` returns the records at the cursor in shard order, at most `limit` (an empty page is
///   normal for an open shard with nothing new), and the cursor to read next. The same record is
///   never returned before an older one of the same shard.
/// - Records older than the retention (24 hours on DynamoDB) are gone: the durable feed, not the
///   change stream, is where a new reader starts.
#[async_trait]
pub trait ChangeSource: Send + Sync + 'static {
    async fn shards(&self) -> Result<Vec<ShardInfo>, FanoutError>;
    async fn open(&self, shard: &str, after: Option<&str>) -> Result<ShardCursor, FanoutError>;
    async fn read(&self, cursor: &ShardCursor, limit: usize) -> Result<ShardPage, FanoutError>;
}

/// What the relay has durably done with one shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardCheckpoint {
    /// Every record up to and including this sequence number was indexed and published.
    pub sequence: Option<String>,
    /// The shard is closed and every record of it was relayed: its children may start.
    pub finished: bool,
}

/// One [`ShardCheckpointStore::save`]: move `shard`'s checkpoint from `previous` to `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSave<'a> {
    pub shard: &'a str,
    /// The checkpoint the caller last loaded or saved (`None`: none stored yet).
    pub previous: Option<&'a ShardCheckpoint>,
    pub next: &'a ShardCheckpoint,
}

/// The relay's per-shard checkpoints (a DynamoDB table on AWS).
///
/// Contract: `save` is a compare-and-set. It stores `next` only when the stored checkpoint is
/// still `previous` (`None`: none stored yet) and fails with
/// [`FanoutError::CheckpointConflict`] otherwise, so two relays racing on one shard cannot move
/// its checkpoint past each other's unpublished records.
#[async_trait]
pub trait ShardCheckpointStore: Send + Sync + 'static {
    async fn load(&self, shard: &str) -> Result<Option<ShardCheckpoint>, FanoutError>;
    async fn save(&self, save: CheckpointSave<'_>) -> Result<(), FanoutError>;
}

/// Who relays which shard when several relays run: a lease per shard, held by one relay at a
/// time until it expires, and a heartbeat per relay so that each can take its fair share.
///
/// Contract:
/// - `acquire(shard, owner, ttl)` makes `owner` the holder for `ttl` from now and answers true
///   when the shard was free, its lease had expired, or `owner` already held it; otherwise it
///   answers false and changes nothing. Two owners never both get true for overlapping times.
/// - `release(shard, owner)` frees the shard if `owner` holds it (and does nothing otherwise).
/// - `heartbeat(owner, ttl)` records `owner` as alive for `ttl` and answers how many relays are
///   alive now, `owner` included.
///
/// Leases decide who *should* relay a shard; the checkpoints' compare-and-set still guards
/// every move, so a relay that lost its lease without knowing it (a long pause) can at worst
/// relay a page twice, never skip one.
#[async_trait]
pub trait ShardLeases: Send + Sync + 'static {
    async fn acquire(
        &self,
        shard: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, FanoutError>;
    async fn release(&self, shard: &str, owner: &str) -> Result<(), FanoutError>;
    async fn heartbeat(&self, owner: &str, ttl: std::time::Duration) -> Result<usize, FanoutError>;
}

/// The leases of one process: every relay in it shares them (tests, and a single relay).
#[derive(Debug, Default)]
pub struct MemoryShardLeases {
    state: std::sync::Mutex<MemoryLeases>,
}

#[derive(Debug, Default)]
struct MemoryLeases {
    shards: std::collections::HashMap<String, (String, std::time::Instant)>,
    relays: std::collections::HashMap<String, std::time::Instant>,
}

#[async_trait]
impl ShardLeases for MemoryShardLeases {
    async fn acquire(
        &self,
        shard: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, FanoutError> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let free = match state.shards.get(shard) {
            None => true,
            Some((holder, until)) => holder == owner || *until <= now,
        };
        if free {
            state
                .shards
                .insert(shard.to_owned(), (owner.to_owned(), now + ttl));
        }
        Ok(free)
    }

    async fn release(&self, shard: &str, owner: &str) -> Result<(), FanoutError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .shards
            .get(shard)
            .is_some_and(|(holder, _)| holder == owner)
        {
            state.shards.remove(shard);
        }
        Ok(())
    }

    async fn heartbeat(&self, owner: &str, ttl: std::time::Duration) -> Result<usize, FanoutError> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.relays.insert(owner.to_owned(), now + ttl);
        state.relays.retain(|_, until| *until > now);
        Ok(state.relays.len())
    }
}

/// The durable global feed the relay maintains (the event store's `feed` reads it).
///
/// Contract: `index` appends the events, each to its stream's feed partition in the order given,
/// skipping the ones already indexed (a stream's events at or below the highest sequence indexed
/// for it), so a redelivered batch is harmless. Each stream's events must be given in sequence
/// order.
#[async_trait]
pub trait FeedWriter: Send + Sync + 'static {
    async fn index(&self, events: Vec<EventEnvelope>) -> Result<(), StoreError>;
}

/// Why the publisher refused one entry of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFailure {
    /// The entry's index in the batch given to [`EventPublisher::publish`].
    pub index: usize,
    pub code: Option<String>,
    pub message: String,
    /// Whether sending the entry again may succeed (throttling, an internal failure).
    pub transient: bool,
}

/// Puts events on the bus (EventBridge on AWS).
///
/// Contract: `publish` sends at most [`EventPublisher::MAX_BATCH`] events in one call. `Ok`
/// lists the entries that were NOT accepted (an empty list: all were); `Err` means none may be
/// assumed accepted. An accepted entry is delivered to every matching queue at least once.
/// Sending an entry again is allowed (consumers deduplicate).
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<Vec<PublishFailure>, FanoutError>;
}

/// The batch limit of [`EventPublisher::publish`] (PutEvents takes 10 entries).
pub const MAX_PUBLISH_BATCH: usize = 10;

/// A message received from an [`EventQueue`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// Names this delivery for `delete` and `change_visibility`.
    pub receipt: String,
    pub message_id: String,
    /// How many times the message was received, this time included (1 the first time).
    pub receive_count: u32,
    /// The event, or why the message body could not be decoded into one. Undecodable messages
    /// are never deleted: the queue's redrive policy moves them to the dead-letter queue.
    pub event: Result<EventEnvelope, String>,
}

/// What one [`EventQueue::receive`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receive {
    /// At most this many messages (1..=10).
    pub max: usize,
    /// How long to wait for messages (a long poll).
    pub wait: Duration,
    /// How long a returned message stays invisible to other receivers (`None`: the queue's
    /// default).
    pub visibility: Option<Duration>,
}

/// One consumer group's queue of events (SQS behind an EventBridge rule on AWS).
///
/// Contract:
/// - `receive` waits up to `wait` for messages and returns at most `max` (1..=10). A returned
///   message is invisible to other receivers for `visibility` (the queue's default when
///   `None`) and comes back after that unless deleted ([`Receive`]). Messages come in any order, and a
///   message may come more than once.
/// - `delete` removes delivered messages for good; call it only after their effect committed.
///   It returns the receipts it could not delete (they will be delivered again).
/// - `change_visibility(receipt, d)` makes the message visible again after `d`;
///   `Duration::ZERO` releases it at once.
/// - A message received more than the queue's maximum receive count moves to its dead-letter
///   queue instead of being delivered again.
#[async_trait]
pub trait EventQueue: Send + Sync + 'static {
    async fn receive(&self, request: Receive) -> Result<Vec<QueuedEvent>, FanoutError>;
    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, FanoutError>;
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), FanoutError>;
}

/// Orders two stream sequence numbers (decimal digit strings of any length) numerically.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
        assert_eq!(
            compare_sequence_numbers("1100000000017454423010", "1100000000017454423009"),
            Ordering::Greater
        );
        assert_eq!(compare_sequence_numbers("007", "7"), Ordering::Equal);
    }
}
