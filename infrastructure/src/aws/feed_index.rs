//! [`FeedIndexer`]: the durable, partitioned feed of the AWS deployment.
//!
//! DynamoDB has no global order over partitions, so the feed is a table of its own that an
//! indexer appends to: the relay, as it reads the events table's stream (or the event store
//! itself with `index_on_append`). A new projection or an analyst reads it from the start; the
//! stream itself only keeps 24 hours.
//!
//! **Partitions.** The feed has P partitions, fixed when the stage is created
//! ([`FeedIndexer::create`], `backbone provision --feed-partitions`). An event goes to the
//! partition [`commands::feed::partition_of_stream`] gives its stream, so each stream's events
//! stay in order in one partition. Each partition has its own counter and gapless positions, and
//! its entries live under their own partition key, so indexing capacity grows with P: no item is
//! written by every indexing transaction. A reader's place is a [`FeedCursor`] (one position per
//! partition); a page is the partitions' next events merged by commit time
//! ([`commands::feed::merge`]).
//!
//! Layout of the feed table (pk `part` S, sk `pos` N):
//!
//! | item | `part` | `pos` | attributes |
//! |---|---|---|---|
//! | the layout | `layout` | 0 | `partitions` N, `legacy` N (1: the one-partition keys below) |
//! | partition k's counter | `head#<k>` | 0 | `last` N: the highest position written |
//! | an entry of partition k | `feed#<k>` | position | the envelope ([`super::codec::envelope_item`]) and `hour` |
//! | a stream's high-water mark | `stream#<type>/<id>` | 0 | `seq` N: its last sequence indexed |
//!
//! Indexing is one TransactWriteItems per chunk of one partition's events (at most 100 actions):
//! the partition's counter moves from the value just read (`#last = :old`, so concurrent
//! indexers of one partition serialize), each event gets its entry (`attribute_not_exists`), and
//! each stream in the chunk its high-water mark, on the condition that it is below the chunk's
//! first sequence of that stream. A redelivered event fails that condition: the mark is read,
//! the events at or below it are dropped and the rest is retried. So an event is never indexed
//! twice, positions stay gapless, and idempotency costs one item per stream and chunk instead of
//! one per event. Readers read the counters first and only ask for positions up to them, so they
//! never step past an entry that is not visible yet.
//!
//! **Stages created before partitions** have a `head` counter and `feed` entries, and an
//! `event#<event_id>` marker per event instead of the high-water marks. They are read as one
//! partition with those keys (`legacy`), and indexing there keeps writing the markers as well,
//! so an event relayed again from before the upgrade is still recognized.
//!
//! **The time index.** Each entry also carries `hour`, the hour of its `occurred_at`
//! (`2026-11-21T22`), which the GSI [`ResourceNames::FEED_BY_HOUR`] keys with `pos`: an
//! analyst's time range reads only the hours it covers, per partition in position order
//! ([`FeedIndexer::read_between`]). Entries indexed before the index existed have no `hour` and
//! are only found by reading the feed.

use super::codec::{self, decode_event, envelope_item, n, s, AttrSource, Item};
use super::ddb::{self, built, QuerySpec, TxError, CONDITIONAL_CHECK_FAILED};
use super::error::RetryPolicy;
use super::metrics::{RequestCounters, RequestCounts};
use super::names::ResourceNames;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use commands::feed::{merge, pack, partition_of_stream, MAX_PARTITIONS};
use commands::{EventEnvelope, FeedCursor, FeedTimeRange, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::OnceCell;

const PART: &str = "part";
const POS: &str = codec::POSITION;
const LAST: &str = "last";
const SEQ: &str = "seq";
const HOUR: &str = "hour";
const LAYOUT_PART: &str = "layout";
const PARTITIONS: &str = "partitions";
const LEGACY: &str = "legacy";
/// The one-partition keys of stages created before partitions.
const LEGACY_HEAD: &str = "head";
const LEGACY_FEED: &str = "feed";
/// A time range longer than this is read from the feed instead: a page through the time index
/// costs one Query per hour of the range and partition.
pub const MAX_INDEXED_HOURS: i64 = 24 * 31;
/// The partitions of a new stage's feed unless told otherwise: four times the indexing capacity
/// of one partition (about 250 events/s each of up to 1 KB, see the README's capacity model),
/// while a reader's page costs four Queries, which an idle or small shop hardly notices.
pub const DEFAULT_FEED_PARTITIONS: u32 = 4;
/// TransactWriteItems takes at most 100 actions.
const MAX_ACTIONS: usize = 100;

/// How a stage's feed is laid out; fixed when the stage is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLayout {
    pub partitions: u32,
    /// A stage created before partitions: one partition under the keys `head` and `feed`, with a
    /// marker item per event.
    pub legacy: bool,
}

impl FeedLayout {
    fn head_key(&self, partition: u32) -> String {
        if self.legacy {
            LEGACY_HEAD.to_owned()
        } else {
            format!("head#{partition}")
        }
    }

    fn entries_key(&self, partition: u32) -> String {
        if self.legacy {
            LEGACY_FEED.to_owned()
        } else {
            format!("feed#{partition}")
        }
    }

    fn partition_of(&self, event: &EventEnvelope) -> u32 {
        partition_of_stream(
            event.stream_type.as_str(),
            &event.stream_id,
            self.partitions,
        )
    }
}

/// Writes and reads the feed table. Cheap to clone.
#[derive(Clone)]
pub struct FeedIndexer {
    client: Client,
    table: String,
    retry: RetryPolicy,
    counters: Arc<RequestCounters>,
    layout: Arc<OnceCell<FeedLayout>>,
}

impl std::fmt::Debug for FeedIndexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedIndexer")
            .field("table", &self.table)
            .field("layout", &self.layout.get())
            .finish_non_exhaustive()
    }
}

fn key(part: &str, pos: u64) -> Item {
    HashMap::from([(PART.to_owned(), s(part)), (POS.to_owned(), n(pos))])
}

fn stream_key(event: &EventEnvelope) -> String {
    format!("stream#{}/{}", event.stream_type.as_str(), event.stream_id)
}

fn internal(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("{what}: {e}"))
}

fn number_of(item: &Item, name: &str) -> Result<Option<u64>, StoreError> {
    item.number(name)
        .map(|raw| raw.parse().map_err(|e| internal(name, e)))
        .transpose()
}

impl FeedIndexer {
    pub fn new(client: Client, names: &ResourceNames, retry: RetryPolicy) -> Self {
        Self {
            client,
            table: names.feed_table.clone(),
            retry,
            counters: Arc::new(RequestCounters::default()),
            layout: Arc::new(OnceCell::new()),
        }
    }

    /// Requests made by this indexer (indexing and feed reads).
    pub fn counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        Ok(self
            .retry
            .retry("GetItem", |_| {
                ddb::get_item(&self.client, &self.counters, &self.table, key.clone())
            })
            .await?)
    }

    /// Fixes the feed's layout at stage creation: `partitions` partitions (1 to
    /// [`MAX_PARTITIONS`]). A stage that already has a layout keeps it, and asking for another
    /// partition count is an error; a stage created before partitions stays one legacy partition.
    pub async fn create(&self, partitions: u32) -> Result<FeedLayout, StoreError> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(StoreError::Internal(format!(
                "a feed has 1 to {MAX_PARTITIONS} partitions, not {partitions}"
            )));
        }
        let layout = self.settle_layout(partitions).await?;
        // The same as any reader finds: the layout never changes once written.
        let _ = self.layout.set(layout);
        if !layout.legacy && layout.partitions != partitions {
            return Err(StoreError::Internal(format!(
                "the feed of this stage has {} partitions, fixed when it was created; it cannot become {partitions}",
                layout.partitions
            )));
        }
        Ok(layout)
    }

    /// The feed's layout, read once (it never changes). A stage without one gets the
    /// default, or is recognized as created before partitions.
    pub async fn layout(&self) -> Result<FeedLayout, StoreError> {
        self.layout
            .get_or_try_init(|| self.settle_layout(DEFAULT_FEED_PARTITIONS))
            .await
            .copied()
    }

    /// Reads the layout item, or writes it (conditionally, so concurrent first users agree).
    async fn settle_layout(&self, partitions: u32) -> Result<FeedLayout, StoreError> {
        loop {
            if let Some(item) = self.get(key(LAYOUT_PART, 0)).await? {
                let layout = FeedLayout {
                    partitions: number_of(&item, PARTITIONS)?
                        .and_then(|p| u32::try_from(p).ok())
                        .filter(|p| (1..=MAX_PARTITIONS).contains(p))
                        .ok_or_else(|| internal("feed layout", "no valid partition count"))?,
                    legacy: number_of(&item, LEGACY)? == Some(1),
                };
                return Ok(layout);
            }
            let legacy = self.get(key(LEGACY_HEAD, 0)).await?.is_some();
            let put = Put::builder()
                .table_name(&self.table)
                .item(PART, s(LAYOUT_PART))
                .item(POS, n(0))
                .item(
                    PARTITIONS,
                    n(if legacy { 1 } else { u64::from(partitions) }),
                )
                .item(LEGACY, n(u64::from(legacy)))
                .condition_expression("attribute_not_exists(#p)")
                .expression_attribute_names("#p", PART);
            let items = vec![TransactWriteItem::builder()
                .put(built(put.build())?)
                .build()];
            match ddb::transact(&self.client, &self.counters, items).await {
                // Written, or written by someone else first: read it back either way.
                Ok(()) | Err(TxError::ConditionFailed(_)) => continue,
                Err(TxError::Failed(failure)) => return Err(failure.into()),
            }
        }
    }

    /// Appends `events` to the feed, each to its stream's partition in the order given,
    /// skipping any already indexed, so a redelivery is harmless. Callers keep each stream's
    /// events in sequence order (the relay does: a stream shard is ordered per partition key).
    /// The partitions are indexed concurrently.
    #[tracing::instrument(skip_all, fields(events = events.len()), err)]
    pub async fn index(&self, events: Vec<EventEnvelope>) -> Result<(), StoreError> {
        let layout = self.layout().await?;
        let mut seen = HashSet::new();
        let mut by_partition: BTreeMap<u32, Vec<EventEnvelope>> = BTreeMap::new();
        for event in events {
            if seen.insert(event.event_id) {
                by_partition
                    .entry(layout.partition_of(&event))
                    .or_default()
                    .push(event);
            }
        }
        futures::future::try_join_all(
            by_partition
                .into_iter()
                .map(|(partition, events)| self.index_partition(layout, partition, events)),
        )
        .await?;
        Ok(())
    }

    /// The next chunk of `pending` for one transaction: as many events as fit in
    /// [`MAX_ACTIONS`] with the counter, an entry each, a high-water mark per stream (and a
    /// marker each on a legacy feed).
    fn chunk_len(layout: FeedLayout, pending: &[EventEnvelope]) -> usize {
        let per_event = if layout.legacy { 2 } else { 1 };
        let mut streams = HashSet::new();
        let mut actions = 1;
        for (i, event) in pending.iter().enumerate() {
            let new_stream = usize::from(streams.insert((event.stream_type, &event.stream_id)));
            if actions + per_event + new_stream > MAX_ACTIONS {
                return i;
            }
            actions += per_event + new_stream;
        }
        pending.len()
    }

    async fn index_partition(
        &self,
        layout: FeedLayout,
        partition: u32,
        mut pending: Vec<EventEnvelope>,
    ) -> Result<(), StoreError> {
        let head_key = layout.head_key(partition);
        let entries_key = layout.entries_key(partition);
        // Bounds the loop when every try is lost to concurrent indexers.
        let mut contention = 0u32;
        while !pending.is_empty() {
            let take = Self::chunk_len(layout, &pending);
            let head = self.partition_head(&head_key).await?;
            let chunk = &pending[..take];
            let mut items = Vec::with_capacity(MAX_ACTIONS);
            let mut counter = Put::builder()
                .table_name(&self.table)
                .item(PART, s(&head_key))
                .item(POS, n(0))
                .item(LAST, n(head + take as u64));
            counter = if head == 0 {
                counter
                    .condition_expression("attribute_not_exists(#p)")
                    .expression_attribute_names("#p", PART)
            } else {
                counter
                    .condition_expression("#l = :old")
                    .expression_attribute_names("#l", LAST)
                    .expression_attribute_values(":old", n(head))
            };
            items.push(counter.build());
            for (i, event) in chunk.iter().enumerate() {
                let mut entry = envelope_item(event)?;
                entry.insert(HOUR.to_owned(), s(codec::hour_of(&event.occurred_at)));
                entry.insert(PART.to_owned(), s(&entries_key));
                entry.insert(POS.to_owned(), n(head + 1 + i as u64));
                items.push(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(entry))
                        .condition_expression("attribute_not_exists(#p)")
                        .expression_attribute_names("#p", PART)
                        .build(),
                );
            }
            // Each stream's high-water mark: its lowest and highest sequence in the chunk.
            let mut marks: Vec<(String, u64, u64)> = Vec::new();
            for event in chunk {
                let k = stream_key(event);
                match marks.iter_mut().find(|(key, ..)| *key == k) {
                    Some((_, first, last)) => {
                        *first = (*first).min(event.sequence);
                        *last = (*last).max(event.sequence);
                    }
                    None => marks.push((k, event.sequence, event.sequence)),
                }
            }
            for (k, first, last) in &marks {
                items.push(
                    Put::builder()
                        .table_name(&self.table)
                        .item(PART, s(k))
                        .item(POS, n(0))
                        .item(SEQ, n(*last))
                        .condition_expression("attribute_not_exists(#p) OR #s < :first")
                        .expression_attribute_names("#p", PART)
                        .expression_attribute_names("#s", SEQ)
                        .expression_attribute_values(":first", n(*first))
                        .build(),
                );
            }
            if layout.legacy {
                for (i, event) in chunk.iter().enumerate() {
                    items.push(
                        Put::builder()
                            .table_name(&self.table)
                            .item(PART, s(format!("event#{}", event.event_id)))
                            .item(POS, n(0))
                            .item("at", n(head + 1 + i as u64))
                            .condition_expression("attribute_not_exists(#p)")
                            .expression_attribute_names("#p", PART)
                            .build(),
                    );
                }
            }
            let items = items
                .into_iter()
                .map(|put| Ok(TransactWriteItem::builder().put(built(put)?).build()))
                .collect::<Result<Vec<_>, StoreError>>()?;
            match ddb::transact(&self.client, &self.counters, items).await {
                Ok(()) => {
                    pending.drain(..take);
                    contention = 0;
                }
                Err(TxError::ConditionFailed(reasons)) => {
                    // Reasons: the counter, the entries, the marks, then the legacy markers.
                    let failed = |i: usize| {
                        reasons.get(i).and_then(|r| r.as_deref()) == Some(CONDITIONAL_CHECK_FAILED)
                    };
                    let marks_at = 1 + take;
                    let stale_marks: Vec<&String> = marks
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| failed(marks_at + i))
                        .map(|(_, (k, ..))| k)
                        .collect();
                    let markers_at = marks_at + marks.len();
                    let known: HashSet<uuid::Uuid> = chunk
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| layout.legacy && failed(markers_at + i))
                        .map(|(_, e)| e.event_id)
                        .collect();
                    if stale_marks.is_empty() && known.is_empty() {
                        contention += 1;
                        if contention > 20 {
                            return Err(StoreError::Unavailable(
                                "feed indexing kept losing a partition counter to other indexers"
                                    .into(),
                            ));
                        }
                        tokio::time::sleep(self.retry.delay(contention.min(5))).await;
                        continue;
                    }
                    // Some events were indexed already: drop them and go on with the rest.
                    let mut indexed_through: HashMap<String, u64> = HashMap::new();
                    for k in stale_marks {
                        let item = self.get(key(k, 0)).await?;
                        let seq = item.map(|i| number_of(&i, SEQ)).transpose()?.flatten();
                        indexed_through.insert(k.clone(), seq.unwrap_or(0));
                    }
                    pending.retain(|e| {
                        !known.contains(&e.event_id)
                            && indexed_through
                                .get(&stream_key(e))
                                .is_none_or(|&through| e.sequence > through)
                    });
                }
                Err(TxError::Failed(failure)) if failure.transient => {
                    contention += 1;
                    if contention > self.retry.max_attempts.max(1) {
                        return Err(failure.into());
                    }
                    tokio::time::sleep(self.retry.delay(contention)).await;
                }
                Err(TxError::Failed(failure)) => return Err(failure.into()),
            }
        }
        Ok(())
    }

    /// The highest position written to one partition (0 for none), read consistently.
    async fn partition_head(&self, head_key: &str) -> Result<u64, StoreError> {
        let item = self.get(key(head_key, 0)).await?;
        Ok(item
            .map(|i| number_of(&i, LAST))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    }

    /// The cursor past every event written, read consistently.
    pub async fn head(&self) -> Result<FeedCursor, StoreError> {
        let layout = self.layout().await?;
        let heads = futures::future::try_join_all((0..layout.partitions).map(|p| {
            let head_key = layout.head_key(p);
            async move { self.partition_head(&head_key).await }
        }))
        .await?;
        Ok(FeedCursor::of(heads))
    }

    /// Decodes a feed entry of partition `partition`: its `global_position` packs the two.
    fn decode_entry(partition: u32, item: &Item) -> Result<EventEnvelope, StoreError> {
        let mut event = decode_event(item)?;
        event.global_position = event.global_position.map(|p| pack(partition, p));
        Ok(event)
    }

    /// The entries after `after`, at most `limit`, merged over the partitions by commit time
    /// ([`merge`]), each with `global_position` set.
    #[tracing::instrument(skip_all, fields(%after, limit = limit), err)]
    pub async fn read(
        &self,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let layout = self.layout().await?;
        let head = self.head().await?;
        let pages = futures::future::try_join_all((0..layout.partitions).map(|p| {
            let (from, to) = (after.position(p), head.position(p));
            self.read_partition(layout, p, from, to, limit)
        }))
        .await?;
        Ok(merge(pages, limit))
    }

    /// Partition `partition`'s entries with `after < position <= head`, at most `limit`, in
    /// position order, stopping at the first one not visible yet.
    async fn read_partition(
        &self,
        layout: FeedLayout,
        partition: u32,
        after: u64,
        head: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if head <= after {
            return Ok(Vec::new());
        }
        let upper = head.min(after.saturating_add(limit as u64));
        let spec = QuerySpec {
            table: self.table.clone(),
            key_condition: "#p = :p AND #q BETWEEN :from AND :to".into(),
            names: HashMap::from([
                ("#p".to_owned(), PART.to_owned()),
                ("#q".to_owned(), POS.to_owned()),
            ]),
            values: HashMap::from([
                (":p".to_owned(), s(layout.entries_key(partition))),
                (":from".to_owned(), n(after + 1)),
                (":to".to_owned(), n(upper)),
            ]),
            forward: true,
            limit: Some(limit),
            consistent: true,
            ..QuerySpec::default()
        };
        let items = ddb::query_retried(&self.client, &self.counters, &self.retry, &spec).await?;
        let mut out = Vec::with_capacity(items.len());
        for (expected, item) in (after + 1..).zip(&items) {
            let event = Self::decode_entry(partition, item)?;
            // Positions are gapless by construction; a hole would be an entry not visible yet,
            // and returning what follows it would let a reader skip it forever.
            if event.global_position != Some(pack(partition, expected)) {
                break;
            }
            out.push(event);
        }
        Ok(out)
    }

    /// The entries after `range.after` and up to the head whose `occurred_at` is within
    /// `[range.from, range.to]`, merged as [`read`](Self::read) merges, at most `range.limit`,
    /// through the time index; `None`
    /// when the range spans more than [`MAX_INDEXED_HOURS`] hours (reading the feed is then
    /// cheaper).
    ///
    /// Each hour of the range is one Query per partition (more pages only where the first and
    /// last hours hold events outside the range); each returns its first `limit` matches in
    /// position order, so every partition's first `limit` matches are known and so is the
    /// page. The GSI is eventually consistent: an entry indexed a moment ago may not be found
    /// yet.
    #[tracing::instrument(skip_all, fields(after = %range.after, from = %range.from, to = %range.to, limit = range.limit), err)]
    pub async fn read_between(
        &self,
        range: FeedTimeRange<'_>,
    ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        let FeedTimeRange {
            after,
            from,
            to,
            limit,
        } = range;
        let first = codec::truncate_to_hour(&from);
        if to < from || limit == 0 {
            return Ok(Some(Vec::new()));
        }
        if (to - first).num_hours() >= MAX_INDEXED_HOURS {
            return Ok(None);
        }
        let layout = self.layout().await?;
        let head = self.head().await?;
        let mut pages = Vec::with_capacity(layout.partitions as usize);
        for partition in 0..layout.partitions {
            let (lo, hi) = (after.position(partition), head.position(partition));
            let mut found = Vec::new();
            let mut hour = first;
            while hi > lo && hour <= to {
                let spec = QuerySpec {
                    table: self.table.clone(),
                    index: Some(ResourceNames::FEED_BY_HOUR.to_owned()),
                    key_condition: "#h = :h AND #q BETWEEN :from AND :to".into(),
                    filter: Some("#p = :p AND #t BETWEEN :lo AND :hi".into()),
                    names: HashMap::from([
                        ("#h".to_owned(), HOUR.to_owned()),
                        ("#q".to_owned(), POS.to_owned()),
                        ("#p".to_owned(), PART.to_owned()),
                        ("#t".to_owned(), codec::OCCURRED_AT.to_owned()),
                    ]),
                    values: HashMap::from([
                        (":h".to_owned(), s(codec::hour_of(&hour))),
                        (":from".to_owned(), n(lo + 1)),
                        (":to".to_owned(), n(hi)),
                        (":p".to_owned(), s(layout.entries_key(partition))),
                        (":lo".to_owned(), s(codec::format_timestamp(&from))),
                        (":hi".to_owned(), s(codec::format_timestamp(&to))),
                    ]),
                    forward: true,
                    limit: Some(limit),
                    ..QuerySpec::default()
                };
                let items =
                    ddb::query_retried(&self.client, &self.counters, &self.retry, &spec).await?;
                for item in &items {
                    found.push(Self::decode_entry(partition, item)?);
                }
                hour += chrono::Duration::hours(1);
            }
            found.sort_by_key(|e| e.global_position);
            found.truncate(limit);
            pages.push(found);
        }
        Ok(Some(merge(pages, limit)))
    }
}
