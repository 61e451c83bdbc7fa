//! The relay: change stream → durable feed → event bus.
//!
//! Each step reads one page of every shard that may be read now (a shard whose parent is
//! finished or no longer listed: parents before children), and for each page, in this order:
//!
//! 1. indexes the page's events into the durable global feed ([`FeedWriter`]), so a new
//!    projection or an analyst can read everything from position 0 after the stream's 24 hours;
//! 2. publishes them in batches of at most [`MAX_PUBLISH_BATCH`], retrying exactly the entries
//!    the publisher reports as failed, with jittered backoff;
//! 3. only then moves the shard's checkpoint to the page's last record (compare-and-set).
//!
//! A failure anywhere leaves the checkpoint where it was and drops the shard's cursor, so the
//! next step reopens the shard after the checkpoint and relays the page again: a record is never
//! skipped, and the price is duplicates downstream, which consumers skip. Indexing is idempotent
//! by event id, so a re-relayed page does not grow the feed.
//!
//! Several relays share a stream through [`ShardLeases`] ([`Relay::with_leases`]): a relay
//! relays only the shards it holds a lease on, renews them as it goes, takes at most its fair
//! share (the shards not yet finished over the relays alive), and gives back the extra ones when
//! another relay joins. A relay that dies keeps its leases until they expire
//! ([`RelayConfig::lease_ttl`]); another then takes its shards over from their checkpoints.

/// How far behind the events table's stream the relay reads, in milliseconds.
pub const RELAY_ITERATOR_AGE: &str = "backbone_relay_iterator_age_milliseconds";
use crate::feed::{spawn_loop, LoopContext, Outcome};
use commands::{
    compare_sequence_numbers, ChangeSource, CheckpointSave, EventEnvelope, EventPublisher,
    FanoutError, FeedWriter, ShardCheckpoint, ShardCheckpointStore, ShardCursor, ShardInfo,
    ShardLeases, MAX_PUBLISH_BATCH,
};
use futures::stream::{self, StreamExt};
use rand::Rng;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Records asked per shard read (DynamoDB Streams allows up to 1,000).
    pub page_size: usize,
    /// Publish calls in flight at once for one page.
    pub publish_concurrency: usize,
    /// Rounds of retrying failed entries within one step before the step fails (the loop then
    /// backs off and the page is relayed again from the checkpoint).
    pub publish_attempts: u32,
    /// Backoff between those rounds: full jitter in `[0, min(max, base * 2^n)]`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often the shard list is read again (new shards appear when shards split).
    pub shard_refresh: Duration,
    /// With several relays, how long a shard's lease lasts: the longest a dead relay's shards
    /// wait for another to take them over. `None`: this relay is alone and takes no leases.
    pub lease_ttl: Option<Duration>,
}

/// The lease time of deployed relays.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            page_size: 500,
            publish_concurrency: 4,
            publish_attempts: 8,
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            shard_refresh: Duration::from_secs(10),
            lease_ttl: None,
        }
    }
}

impl RelayConfig {
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.retry_max);
        let millis = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[derive(Debug)]
struct ShardState {
    info: ShardInfo,
    /// As stored (`None`: never saved); the `previous` of the next compare-and-set.
    checkpoint: Option<ShardCheckpoint>,
    cursor: Option<ShardCursor>,
    /// Until when this relay holds the shard's lease, as far as it knows.
    lease_until: Option<Instant>,
}

impl ShardState {
    fn finished(&self) -> bool {
        self.checkpoint.as_ref().is_some_and(|c| c.finished)
    }
}

#[derive(Debug, Default)]
struct State {
    shards: BTreeMap<String, ShardState>,
    refreshed_at: Option<Instant>,
    /// Records relayed by this process (the worker's reported progress).
    relayed: u64,
    /// How many shards this relay may hold (with leases): its fair share.
    share: usize,
    /// When this relay last said it is alive.
    heartbeat_at: Option<Instant>,
}

/// What one step did, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStep {
    /// Stream records read and checkpointed.
    pub records: usize,
    /// Events published (each at least once).
    pub published: usize,
    /// Entries sent again after the publisher reported them failed.
    pub republished: usize,
    /// How long ago the newest event read was committed: how far behind the stream the relay
    /// reads (its iterator age).
    pub behind: Option<std::time::Duration>,
}

/// The relay over its four ports. Share it behind an `Arc` and [`spawn`](Self::spawn) it.
pub struct Relay {
    name: String,
    source: Arc<dyn ChangeSource>,
    checkpoints: Arc<dyn ShardCheckpointStore>,
    feed: Arc<dyn FeedWriter>,
    publisher: Arc<dyn EventPublisher>,
    config: RelayConfig,
    /// The leases and this relay's name in them, when several relays share the stream.
    leasing: Option<(Arc<dyn ShardLeases>, String)>,
    state: tokio::sync::Mutex<State>,
}

impl Relay {
    pub fn new(
        source: Arc<dyn ChangeSource>,
        checkpoints: Arc<dyn ShardCheckpointStore>,
        feed: Arc<dyn FeedWriter>,
        publisher: Arc<dyn EventPublisher>,
        config: RelayConfig,
    ) -> Self {
        Self {
            name: "relay".into(),
            source,
            checkpoints,
            feed,
            publisher,
            config,
            leasing: None,
            state: tokio::sync::Mutex::new(State {
                share: usize::MAX,
                ..State::default()
            }),
        }
    }

    /// Shares the stream with other relays through `leases`, as `owner` (unique per process),
    /// leasing for [`RelayConfig::lease_ttl`] ([`DEFAULT_LEASE_TTL`] when unset).
    pub fn with_leases(mut self, leases: Arc<dyn ShardLeases>, owner: impl Into<String>) -> Self {
        self.config.lease_ttl = Some(self.config.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL));
        self.leasing = Some((leases, owner.into()));
        self
    }

    /// Says this relay is alive (every third of a lease), works out its fair share, and gives
    /// back the shards it holds beyond it.
    async fn balance(&self, state: &mut State) -> Result<(), FanoutError> {
        let (Some((leases, owner)), Some(ttl)) = (&self.leasing, self.config.lease_ttl) else {
            return Ok(());
        };
        if state.heartbeat_at.is_some_and(|at| at.elapsed() < ttl / 3) {
            return Ok(());
        }
        let alive = leases.heartbeat(owner, ttl).await?.max(1);
        state.heartbeat_at = Some(Instant::now());
        let open = state.shards.values().filter(|s| !s.finished()).count();
        state.share = open.div_ceil(alive).max(1);
        let now = Instant::now();
        let mut held: Vec<String> = state
            .shards
            .iter()
            .filter(|(_, s)| s.lease_until.is_some_and(|u| u > now) && !s.finished())
            .map(|(id, _)| id.clone())
            .collect();
        while held.len() > state.share {
            let Some(id) = held.pop() else { break };
            if let Some(shard) = state.shards.get_mut(&id) {
                shard.lease_until = None;
                shard.cursor = None;
            }
            leases.release(&id, owner).await?;
            tracing::info!(shard = %id, owner = %owner, alive, "shard lease given back");
        }
        Ok(())
    }

    /// Whether this relay holds `id`'s lease now, renewing it when a third of it is left and
    /// taking it when it is free and within this relay's share. A shard taken over starts
    /// from its stored checkpoint.
    async fn hold(&self, state: &mut State, id: &str) -> Result<bool, FanoutError> {
        let (Some((leases, owner)), Some(ttl)) = (&self.leasing, self.config.lease_ttl) else {
            return Ok(true);
        };
        let now = Instant::now();
        let held = state
            .shards
            .values()
            .filter(|s| s.lease_until.is_some_and(|u| u > now) && !s.finished())
            .count();
        let share = state.share;
        let Some(shard) = state.shards.get_mut(id) else {
            return Ok(false);
        };
        let mine = shard.lease_until.is_some_and(|u| u > now);
        if shard.lease_until.is_some_and(|u| u > now + ttl / 3) {
            return Ok(true);
        }
        if !mine && held >= share {
            return Ok(false);
        }
        if !leases.acquire(id, owner, ttl).await? {
            shard.lease_until = None;
            shard.cursor = None;
            return Ok(false);
        }
        shard.lease_until = Some(now + ttl);
        if !mine {
            // Another relay may have moved it on.
            shard.checkpoint = self.checkpoints.load(id).await?;
            shard.cursor = None;
            tracing::info!(shard = %id, owner = %owner, "shard lease taken");
        }
        Ok(true)
    }

    /// The shards this relay holds a lease on now.
    #[cfg(test)]
    async fn held(&self) -> Vec<String> {
        let now = Instant::now();
        let state = self.state.lock().await;
        state
            .shards
            .iter()
            .filter(|(_, s)| s.lease_until.is_some_and(|u| u > now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Gives back every lease this relay holds (a clean stop: others need not wait).
    async fn release_all(&self) {
        let Some((leases, owner)) = &self.leasing else {
            return;
        };
        let mut state = self.state.lock().await;
        for (id, shard) in state.shards.iter_mut() {
            if shard.lease_until.take().is_some() {
                if let Err(err) = leases.release(id, owner).await {
                    tracing::warn!(shard = %id, error = %err, "giving back a shard lease failed");
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the shard list and the checkpoints of shards not seen before; forgets shards that
    /// are no longer listed (trimmed: their children no longer wait for them).
    async fn refresh(&self, state: &mut State) -> Result<(), FanoutError> {
        let listed = self.source.shards().await?;
        let ids: std::collections::HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        state.shards.retain(|id, _| ids.contains(id.as_str()));
        for info in listed {
            if state.shards.contains_key(&info.id) {
                continue;
            }
            let checkpoint = self.checkpoints.load(&info.id).await?;
            tracing::debug!(shard = %info.id, parent = ?info.parent, ?checkpoint, "shard discovered");
            state.shards.insert(
                info.id.clone(),
                ShardState {
                    info,
                    checkpoint,
                    cursor: None,
                    lease_until: None,
                },
            );
        }
        state.refreshed_at = Some(Instant::now());
        Ok(())
    }

    /// Shards that may be read now: not finished, with no unfinished parent still listed.
    fn ready(state: &State) -> Vec<String> {
        state
            .shards
            .values()
            .filter(|s| !s.finished())
            .filter(|s| match &s.info.parent {
                None => true,
                Some(parent) => state.shards.get(parent).is_none_or(ShardState::finished),
            })
            .map(|s| s.info.id.clone())
            .collect()
    }

    /// Relays one page of every readable shard. `Progressed` when records were relayed.
    #[tracing::instrument(skip_all, fields(worker = %self.name), err(Display))]
    pub async fn step(&self) -> Result<Outcome, FanoutError> {
        let (outcome, _) = self.step_detailed().await?;
        Ok(outcome)
    }

    /// [`step`](Self::step) with counts.
    pub async fn step_detailed(&self) -> Result<(Outcome, RelayStep), FanoutError> {
        let mut state = self.state.lock().await;
        let stale = state
            .refreshed_at
            .is_none_or(|t| t.elapsed() >= self.config.shard_refresh);
        if stale {
            self.refresh(&mut state).await?;
        }
        self.balance(&mut state).await?;
        let mut done = RelayStep::default();
        let mut finished_any = false;
        for id in Self::ready(&state) {
            if !self.hold(&mut state, &id).await? {
                continue;
            }
            let Some(shard) = state.shards.get_mut(&id) else {
                continue;
            };
            match self.relay_page(shard, &mut done).await {
                Ok(finished) => finished_any |= finished,
                Err(err) => {
                    // Reopen after the checkpoint next time: the cursor may be past records
                    // that were not published.
                    shard.cursor = None;
                    if matches!(err, FanoutError::CheckpointConflict { .. }) {
                        // Someone else moved it: read it again before going on.
                        state.shards.remove(&id);
                        state.refreshed_at = None;
                    }
                    return Err(err);
                }
            }
        }
        if finished_any {
            // Children of the finished shards are listed by the next refresh.
            state.refreshed_at = None;
        }
        // Nothing read means nothing behind.
        let behind = done.behind.unwrap_or_default();
        metrics::gauge!(RELAY_ITERATOR_AGE).set(behind.as_millis() as f64);
        if done.records == 0 {
            return Ok((Outcome::Idle, done));
        }
        state.relayed += done.records as u64;
        metrics::counter!("backbone_relay_records_total").increment(done.records as u64);
        Ok((Outcome::Progressed(state.relayed), done))
    }

    /// Relays one page of `shard`; returns whether the shard is now finished.
    async fn relay_page(
        &self,
        shard: &mut ShardState,
        done: &mut RelayStep,
    ) -> Result<bool, FanoutError> {
        let id = shard.info.id.clone();
        let after = shard.checkpoint.as_ref().and_then(|c| c.sequence.clone());
        let cursor = match shard.cursor.take() {
            Some(c) => c,
            None => self.source.open(&id, after.as_deref()).await?,
        };
        let page = match self.source.read(&cursor, self.config.page_size).await {
            Err(FanoutError::CursorExpired(why)) => {
                tracing::info!(shard = %id, %why, "shard cursor expired, reopening after the checkpoint");
                let cursor = self.source.open(&id, after.as_deref()).await?;
                self.source.read(&cursor, self.config.page_size).await?
            }
            other => other?,
        };
        let closed = page.next.is_none();
        let last = page.records.last().map(|r| r.sequence_number.clone());
        if last.is_none() && !closed {
            shard.cursor = page.next;
            return Ok(false);
        }
        let events: Vec<EventEnvelope> = page
            .records
            .iter()
            .filter_map(|r| r.event.clone())
            .collect();
        if let Some(newest) = events.iter().map(|e| e.occurred_at).max() {
            let behind = (chrono::Utc::now() - newest).to_std().unwrap_or_default();
            done.behind = Some(done.behind.map_or(behind, |b| b.max(behind)));
        }
        if !events.is_empty() {
            let _traced = commands::trace::event_spans(&events, |e, parent| {
                tracing::info_span!(
                    "relay",
                    shard = %id,
                    event_type = %e.event_type,
                    stream = %e.stream(),
                    sequence = e.sequence,
                    trace_id = %parent.trace_id(),
                )
            });
            self.feed.index(events.clone()).await?;
            let republished = self.publish_all(events.clone()).await?;
            done.published += events.len();
            done.republished += republished;
        }
        // Never backwards, whatever the source returned.
        let sequence = match (after, last) {
            (Some(a), Some(l)) => Some(if compare_sequence_numbers(&l, &a) == Ordering::Greater {
                l
            } else {
                a
            }),
            (a, l) => l.or(a),
        };
        let next = ShardCheckpoint {
            sequence,
            finished: closed,
        };
        self.checkpoints
            .save(CheckpointSave {
                shard: &id,
                previous: shard.checkpoint.as_ref(),
                next: &next,
            })
            .await?;
        tracing::debug!(shard = %id, records = page.records.len(), events = events.len(), checkpoint = ?next.sequence, finished = closed, "page relayed");
        done.records += page.records.len();
        shard.checkpoint = Some(next);
        shard.cursor = page.next;
        if closed {
            tracing::info!(shard = %id, "shard finished");
        }
        Ok(closed)
    }

    /// Publishes every event, retrying the entries the publisher reports as failed (and whole
    /// batches that failed transiently). Returns how many entries were sent again. Fails, with
    /// nothing assumed published, after `publish_attempts` rounds or on a permanent failure.
    async fn publish_all(&self, events: Vec<EventEnvelope>) -> Result<usize, FanoutError> {
        let mut pending = events;
        let mut republished = 0;
        let mut round = 0u32;
        loop {
            let batches: Vec<Vec<EventEnvelope>> = pending
                .chunks(MAX_PUBLISH_BATCH)
                .map(<[EventEnvelope]>::to_vec)
                .collect();
            let results: Vec<(Vec<EventEnvelope>, Result<_, FanoutError>)> = stream::iter(batches)
                .map(|batch| async move {
                    let result = self.publisher.publish(&batch).await;
                    (batch, result)
                })
                .buffer_unordered(self.config.publish_concurrency.max(1))
                .collect()
                .await;
            let mut failed = Vec::new();
            let mut permanent = None;
            for (batch, result) in results {
                match result {
                    Ok(failures) => {
                        for f in failures {
                            if !f.transient {
                                permanent = Some(format!(
                                    "entry for event {} refused: {} {}",
                                    batch
                                        .get(f.index)
                                        .map(|e| e.event_id.to_string())
                                        .unwrap_or_default(),
                                    f.code.unwrap_or_default(),
                                    f.message
                                ));
                            }
                            match batch.get(f.index) {
                                Some(e) => failed.push(e.clone()),
                                None => {
                                    return Err(FanoutError::Permanent(format!(
                                        "publisher reported entry {} of a batch of {}",
                                        f.index,
                                        batch.len()
                                    )))
                                }
                            }
                        }
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, entries = batch.len(), "publish failed transiently");
                        failed.extend(batch);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(why) = permanent {
                return Err(FanoutError::Permanent(why));
            }
            if failed.is_empty() {
                return Ok(republished);
            }
            round += 1;
            metrics::counter!("backbone_relay_publish_retries_total")
                .increment(failed.len() as u64);
            if round >= self.config.publish_attempts.max(1) {
                return Err(FanoutError::Transient(format!(
                    "{} entries still unpublished after {round} rounds",
                    failed.len()
                )));
            }
            let pause = self.config.backoff(round);
            tracing::warn!(
                entries = failed.len(),
                round,
                pause_ms = pause.as_millis() as u64,
                "retrying failed publish entries"
            );
            tokio::time::sleep(pause).await;
            republished += failed.len();
            pending = failed;
        }
    }

    /// Spawns the relay loop. Idle steps wait `config.poll` (keep it short: it is the relay's
    /// share of the end-to-end lag).
    pub fn spawn(self: Arc<Self>, context: LoopContext) -> tokio::task::JoinHandle<()> {
        let name = self.name.clone();
        let relay = self.clone();
        let running = spawn_loop(name, context, None, self, |me| async move {
            me.step().await.map_err(anyhow::Error::new)
        });
        tokio::spawn(async move {
            let _ = running.await;
            relay.release_all().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use commands::{ChangeRecord, Metadata, PublishFailure, ShardPage, StoreError};
    use domain::StreamType;
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    fn event(stream: &str, seq: u64) -> EventEnvelope {
        EventEnvelope {
            global_position: None,
            event_id: uuid::Uuid::now_v7(),
            stream_type: StreamType::Order,
            stream_id: stream.into(),
            sequence: seq,
            event_type: "OrderPlaced".into(),
            event_version: 1,
            occurred_at: chrono::Utc::now(),
            payload: serde_json::json!({}).into(),
            metadata: Metadata::default(),
        }
    }

    /// Shards as lists of records; a shard is closed when `closed` holds it. Cursors are
    /// `<shard>@<index>`.
    #[derive(Default)]
    struct FakeSource {
        shards: Mutex<Vec<(ShardInfo, Vec<ChangeRecord>, bool)>>,
        reads: Mutex<Vec<String>>,
    }

    impl FakeSource {
        fn add_shard(
            &self,
            id: &str,
            parent: Option<&str>,
            records: Vec<ChangeRecord>,
            closed: bool,
        ) {
            self.shards.lock().unwrap().push((
                ShardInfo {
                    id: id.into(),
                    parent: parent.map(str::to_owned),
                },
                records,
                closed,
            ));
        }
    }

    #[async_trait]
    impl ChangeSource for FakeSource {
        async fn shards(&self) -> Result<Vec<ShardInfo>, FanoutError> {
            Ok(self
                .shards
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.0.clone())
                .collect())
        }
        async fn open(&self, shard: &str, after: Option<&str>) -> Result<ShardCursor, FanoutError> {
            let shards = self.shards.lock().unwrap();
            let (_, records, _) = shards.iter().find(|s| s.0.id == shard).unwrap();
            let index = match after {
                None => 0,
                Some(a) => records
                    .iter()
                    .position(|r| {
                        compare_sequence_numbers(&r.sequence_number, a) == Ordering::Greater
                    })
                    .unwrap_or(records.len()),
            };
            Ok(ShardCursor(format!("{shard}@{index}")))
        }
        async fn read(&self, cursor: &ShardCursor, limit: usize) -> Result<ShardPage, FanoutError> {
            let (shard, index) = cursor.0.split_once('@').unwrap();
            let index: usize = index.parse().unwrap();
            self.reads.lock().unwrap().push(shard.to_owned());
            let shards = self.shards.lock().unwrap();
            let (_, records, closed) = shards.iter().find(|s| s.0.id == shard).unwrap();
            let end = (index + limit).min(records.len());
            let next = if *closed && end == records.len() {
                None
            } else {
                Some(ShardCursor(format!("{shard}@{end}")))
            };
            Ok(ShardPage {
                records: records[index..end].to_vec(),
                next,
            })
        }
    }

    #[derive(Default)]
    struct FakeCheckpoints(Mutex<HashMap<String, ShardCheckpoint>>);

    #[async_trait]
    impl ShardCheckpointStore for FakeCheckpoints {
        async fn load(&self, shard: &str) -> Result<Option<ShardCheckpoint>, FanoutError> {
            Ok(self.0.lock().unwrap().get(shard).cloned())
        }
        async fn save(&self, save: CheckpointSave<'_>) -> Result<(), FanoutError> {
            let mut map = self.0.lock().unwrap();
            if map.get(save.shard) != save.previous {
                return Err(FanoutError::CheckpointConflict {
                    shard: save.shard.into(),
                });
            }
            map.insert(save.shard.into(), save.next.clone());
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeFeed(Mutex<Vec<EventEnvelope>>);

    #[async_trait]
    impl FeedWriter for FakeFeed {
        async fn index(&self, events: Vec<EventEnvelope>) -> Result<(), StoreError> {
            let mut feed = self.0.lock().unwrap();
            for e in events {
                if !feed.iter().any(|f| f.event_id == e.event_id) {
                    feed.push(e);
                }
            }
            Ok(())
        }
    }

    /// Accepts everything except: the first `fail_entries` entries it sees are reported failed
    /// (transiently), and every call fails while `down` is set.
    #[derive(Default)]
    struct FakePublisher {
        published: Mutex<Vec<EventEnvelope>>,
        batch_sizes: Mutex<Vec<usize>>,
        fail_entries: Mutex<usize>,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl EventPublisher for FakePublisher {
        async fn publish(
            &self,
            events: &[EventEnvelope],
        ) -> Result<Vec<PublishFailure>, FanoutError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(FanoutError::Transient("bus down".into()));
            }
            self.batch_sizes.lock().unwrap().push(events.len());
            let mut failures = Vec::new();
            let mut fail = self.fail_entries.lock().unwrap();
            for (i, e) in events.iter().enumerate() {
                if *fail > 0 && i % 2 == 0 {
                    *fail -= 1;
                    failures.push(PublishFailure {
                        index: i,
                        code: Some("ThrottlingException".into()),
                        message: "slow down".into(),
                        transient: true,
                    });
                } else {
                    self.published.lock().unwrap().push(e.clone());
                }
            }
            Ok(failures)
        }
    }

    fn records(
        stream: &str,
        from_seq: u64,
        n: usize,
        first_sequence_number: u64,
    ) -> Vec<ChangeRecord> {
        (0..n)
            .map(|i| ChangeRecord {
                sequence_number: (first_sequence_number + i as u64).to_string(),
                event: Some(event(stream, from_seq + i as u64)),
            })
            .collect()
    }

    struct Rig {
        source: Arc<FakeSource>,
        checkpoints: Arc<FakeCheckpoints>,
        feed: Arc<FakeFeed>,
        publisher: Arc<FakePublisher>,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                source: Arc::default(),
                checkpoints: Arc::default(),
                feed: Arc::default(),
                publisher: Arc::default(),
            }
        }
        fn relay(&self, page_size: usize) -> Relay {
            Relay::new(
                self.source.clone(),
                self.checkpoints.clone(),
                self.feed.clone(),
                self.publisher.clone(),
                RelayConfig {
                    page_size,
                    retry_base: Duration::from_millis(1),
                    retry_max: Duration::from_millis(2),
                    shard_refresh: Duration::ZERO,
                    ..RelayConfig::default()
                },
            )
        }
        /// The sequence number shard "s" is checkpointed at.
        fn checkpoint(&self) -> Option<String> {
            self.checkpoints.0.lock().unwrap()["s"].sequence.clone()
        }
        /// Adds shard "s" holding `records` and returns the ids of their events.
        fn add_shard(&self, records: Vec<ChangeRecord>) -> HashSet<uuid::Uuid> {
            let ids = records
                .iter()
                .map(|r| r.event.as_ref().unwrap().event_id)
                .collect();
            self.source.add_shard("s", None, records, false);
            ids
        }
        fn published_ids(&self) -> HashSet<uuid::Uuid> {
            self.publisher
                .published
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.event_id)
                .collect()
        }
    }

    impl FakeSource {
        fn push(&self, shard: &str, more: Vec<ChangeRecord>) {
            let mut shards = self.shards.lock().unwrap();
            let (_, records, _) = shards.iter_mut().find(|s| s.0.id == shard).unwrap();
            records.extend(more);
        }
    }

    #[tokio::test]
    async fn relays_split_the_shards_by_lease_and_take_over_a_dead_ones() {
        let rig = Rig::new();
        let leases: Arc<dyn ShardLeases> = Arc::new(commands::MemoryShardLeases::default());
        let ttl = Duration::from_millis(300);
        for (i, shard) in ["s0", "s1", "s2", "s3"].iter().enumerate() {
            rig.source.add_shard(
                shard,
                None,
                records(&format!("o-{i}"), 1, 3, 100 * i as u64 + 1),
                false,
            );
        }
        let leased = |owner: &str| {
            let mut relay = rig.relay(10);
            relay.config.lease_ttl = Some(ttl);
            relay.with_leases(leases.clone(), owner)
        };
        let (a, b) = (leased("a"), leased("b"));
        // The first to start takes everything; once each has seen the other alive (a heartbeat
        // every third of a lease), they hold two shards each, never the same one.
        let deadline = Instant::now() + 10 * ttl;
        let (held_a, held_b) = loop {
            a.step().await.unwrap();
            b.step().await.unwrap();
            let (held_a, held_b) = (a.held().await, b.held().await);
            assert!(
                held_a.iter().all(|s| !held_b.contains(s)),
                "{held_a:?} {held_b:?}"
            );
            if held_a.len() == 2 && held_b.len() == 2 || Instant::now() > deadline {
                break (held_a, held_b);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            (held_a.len(), held_b.len()),
            (2, 2),
            "{held_a:?} {held_b:?}"
        );
        assert!(held_a.iter().all(|s| !held_b.contains(s)));
        assert_eq!(rig.feed.0.lock().unwrap().len(), 12, "every record relayed");

        // `a` dies holding its leases: its shards wait until they expire, then `b` takes them
        // over from their checkpoints and loses nothing written meanwhile.
        for (i, shard) in ["s0", "s1", "s2", "s3"].iter().enumerate() {
            rig.source
                .push(shard, records(&format!("o-{i}"), 4, 2, 100 * i as u64 + 50));
        }
        b.step().await.unwrap();
        assert_eq!(b.held().await, held_b, "not before the leases expire");
        tokio::time::sleep(ttl).await;
        drain(&b).await;
        assert_eq!(b.held().await.len(), 4);
        assert_eq!(rig.feed.0.lock().unwrap().len(), 20, "nothing lost");
        let checkpoints = rig.checkpoints.0.lock().unwrap().clone();
        for (i, shard) in ["s0", "s1", "s2", "s3"].iter().enumerate() {
            assert_eq!(
                checkpoints[*shard].sequence,
                Some((100 * i as u64 + 51).to_string())
            );
        }
    }

    #[tokio::test]
    async fn a_relay_that_stops_gives_its_leases_back_at_once() {
        let rig = Rig::new();
        let leases: Arc<dyn ShardLeases> = Arc::new(commands::MemoryShardLeases::default());
        rig.source
            .add_shard("s0", None, records("o-1", 1, 2, 1), false);
        let mut first = rig.relay(10);
        first.config.lease_ttl = Some(Duration::from_secs(3600));
        let first = Arc::new(first.with_leases(leases.clone(), "first"));
        let cancel = crate::CancellationToken::new();
        let running = first.clone().spawn(LoopContext::new(
            crate::Health::default(),
            cancel.clone(),
            crate::LoopConfig::default(),
        ));
        while first.held().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        running.await.unwrap();
        let second = rig.relay(10).with_leases(leases, "second");
        second.step().await.unwrap();
        assert_eq!(second.held().await, vec!["s0".to_owned()]);
    }

    async fn drain(relay: &Relay) {
        for _ in 0..100 {
            if relay.step().await.unwrap() == Outcome::Idle {
                return;
            }
        }
        panic!("relay never went idle");
    }

    #[tokio::test]
    async fn parents_are_relayed_before_children() {
        let rig = Rig::new();
        let parent = records("o-1", 1, 5, 100);
        let child = records("o-1", 6, 5, 200);
        // Listed child first: the order of the listing must not matter.
        rig.source
            .add_shard("child", Some("parent"), child.clone(), false);
        rig.source.add_shard("parent", None, parent.clone(), true);
        let relay = rig.relay(2);
        drain(&relay).await;
        let published = rig.publisher.published.lock().unwrap().clone();
        let seqs: Vec<u64> = published.iter().map(|e| e.sequence).collect();
        assert_eq!(
            seqs,
            (1..=10).collect::<Vec<_>>(),
            "parent's records first, in order"
        );
        let reads = rig.source.reads.lock().unwrap().clone();
        let first_child = reads.iter().position(|s| s == "child").unwrap();
        assert!(reads[..first_child].iter().all(|s| s == "parent"));
        let cps = rig.checkpoints.0.lock().unwrap().clone();
        assert!(cps["parent"].finished);
        assert_eq!(cps["child"].sequence.as_deref(), Some("204"));
        assert!(!cps["child"].finished);
        assert_eq!(
            rig.feed.0.lock().unwrap().len(),
            10,
            "every event indexed once"
        );
    }

    #[tokio::test]
    async fn failed_entries_are_retried_until_published_and_batches_hold_at_most_ten() {
        let rig = Rig::new();
        let all = rig.add_shard(records("o-2", 1, 37, 1));
        *rig.publisher.fail_entries.lock().unwrap() = 9;
        let relay = rig.relay(100);
        let (_, step) = relay.step_detailed().await.unwrap();
        assert_eq!(step.records, 37);
        assert_eq!(step.republished, 9);
        assert_eq!(rig.published_ids(), all);
        assert!(rig
            .publisher
            .batch_sizes
            .lock()
            .unwrap()
            .iter()
            .all(|n| *n <= MAX_PUBLISH_BATCH));
    }

    #[tokio::test]
    async fn the_checkpoint_never_passes_an_unpublished_record_and_a_new_relay_resumes_from_it() {
        let rig = Rig::new();
        let all = rig.add_shard(records("o-3", 1, 6, 10));
        let relay = rig.relay(3);
        // First page goes through.
        assert!(matches!(
            relay.step().await.unwrap(),
            Outcome::Progressed(3)
        ));
        assert_eq!(rig.checkpoint().as_deref(), Some("12"));
        // The bus goes down: the step fails and the checkpoint stays.
        rig.publisher
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(relay.step().await.is_err());
        assert_eq!(rig.checkpoint().as_deref(), Some("12"));
        drop(relay);
        // A new relay (a restart) resumes after the checkpoint once the bus is back.
        rig.publisher
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let relay = rig.relay(3);
        drain(&relay).await;
        assert_eq!(rig.published_ids(), all, "nothing lost");
        assert_eq!(
            rig.publisher.published.lock().unwrap().len(),
            6,
            "the first page was not sent again"
        );
        assert_eq!(rig.checkpoint().as_deref(), Some("15"));
    }

    #[tokio::test]
    async fn a_second_relay_on_the_same_shard_loses_the_checkpoint_race() {
        let rig = Rig::new();
        rig.source
            .add_shard("s", None, records("o-4", 1, 4, 1), false);
        let a = rig.relay(2);
        let b = rig.relay(2);
        a.step().await.unwrap();
        b.step().await.unwrap();
        assert_eq!(rig.checkpoint().as_deref(), Some("4"));
        // `a` still believes the checkpoint is at 2: compare-and-set refuses its write.
        let err = a.step().await.unwrap_err();
        assert!(
            matches!(err, FanoutError::CheckpointConflict { .. }),
            "{err}"
        );
        assert_eq!(rig.checkpoint().as_deref(), Some("4"));
    }

    #[tokio::test]
    async fn records_without_events_move_the_checkpoint_only() {
        let rig = Rig::new();
        let mut recs = records("o-5", 1, 2, 1);
        recs.insert(
            1,
            ChangeRecord {
                sequence_number: "2".into(),
                event: None,
            },
        );
        recs[2].sequence_number = "3".into();
        rig.source.add_shard("s", None, recs, false);
        let relay = rig.relay(10);
        drain(&relay).await;
        assert_eq!(rig.publisher.published.lock().unwrap().len(), 2);
        assert_eq!(rig.checkpoint().as_deref(), Some("3"));
    }
}
