//! [`FeedIndexer`]: the durable global feed of the AWS deployment.
//!
//! DynamoDB has no global order over partitions, so the feed is a table of its own that an
//! indexer appends to: the relay, as it reads the events table's stream (or the event store
//! itself with `index_on_append`). A new projection or an analyst reads it from position 0; the
//! stream itself only keeps 24 hours.
//!
//! Layout of the feed table (pk `part` S, sk `pos` N):
//!
//! | item | `part` | `pos` | attributes |
//! |---|---|---|---|
//! | the head counter | `head` | 0 | `last` N: the highest position written |
//! | a feed entry | `feed` | position | the envelope ([`super::codec::envelope_item`]) and `hour` |
//! | an "already indexed" marker | `event#<event_id>` | 0 | `at` N: its position |
//!
//! Indexing is one TransactWriteItems per chunk of up to 49 events: the counter moves from the
//! value just read (`#last = :old`, so concurrent indexers serialize), and each event gets its
//! marker and its entry, both `attribute_not_exists`. A redelivered event fails its marker
//! condition, is dropped from the chunk and the rest is retried: an event is never indexed twice
//! and positions stay gapless. Readers read the counter first and only ask for positions up to
//! it, so they never step past an entry that is not visible yet.
//!
//! All entries live under one partition key (`feed`): that keeps a single total order readable
//! with one Query per page, at the cost of the partition's write ceiling (about 1,000 writes/s),
//! which bounds indexing throughput.
//!
//! **The time index.** Each entry also carries `hour`, the hour of its `occurred_at`
//! (`2026-11-21T22`), which the GSI [`ResourceNames::FEED_BY_HOUR`] keys with `pos`: an
//! analyst's time range reads only the hours it covers, each in feed order
//! ([`FeedIndexer::read_between`]). Its partition per hour takes the same writes as the feed's
//! one partition, so it adds no lower ceiling. Entries indexed before the index existed have
//! no `hour` and are only found by reading the feed.

use super::codec::{self, decode_event, envelope_item, n, s, AttrSource, Item};
use super::ddb::{self, built, QuerySpec, TxError, CONDITIONAL_CHECK_FAILED};
use super::error::RetryPolicy;
use super::metrics::{RequestCounters, RequestCounts};
use super::names::ResourceNames;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use commands::{EventEnvelope, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const PART: &str = "part";
const POS: &str = codec::POSITION;
const LAST: &str = "last";
const AT: &str = "at";
const HEAD_PART: &str = "head";
const FEED_PART: &str = "feed";
const HOUR: &str = "hour";
/// A time range longer than this is read from the feed instead: a page through the time index
/// costs one Query per hour of the range.
pub const MAX_INDEXED_HOURS: i64 = 24 * 31;
/// 1 counter action + 2 per event <= 100.
const CHUNK: usize = 49;

/// Writes and reads the feed table. Cheap to clone.
#[derive(Clone)]
pub struct FeedIndexer {
    client: Client,
    table: String,
    retry: RetryPolicy,
    counters: Arc<RequestCounters>,
}

impl std::fmt::Debug for FeedIndexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedIndexer")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn key(part: &str, pos: u64) -> Item {
    HashMap::from([(PART.to_owned(), s(part)), (POS.to_owned(), n(pos))])
}

impl FeedIndexer {
    pub fn new(client: Client, names: &ResourceNames, retry: RetryPolicy) -> Self {
        Self {
            client,
            table: names.feed_table.clone(),
            retry,
            counters: Arc::new(RequestCounters::default()),
        }
    }

    /// Requests made by this indexer (indexing and feed reads).
    pub fn counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// Appends `events` to the feed in the order given, skipping any already indexed (by event
    /// id), so a redelivery is harmless. Callers keep each stream's events in sequence order
    /// (the relay does: a stream shard is ordered per partition key).
    #[tracing::instrument(skip_all, fields(events = events.len()), err)]
    pub async fn index(&self, events: Vec<EventEnvelope>) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        let mut pending: Vec<EventEnvelope> = events
            .into_iter()
            .filter(|e| seen.insert(e.event_id))
            .collect();
        // Bounds the loop when every try is lost to concurrent indexers.
        let mut contention = 0u32;
        while !pending.is_empty() {
            let take = pending.len().min(CHUNK);
            let head = self.head().await?;
            let mut items = Vec::with_capacity(1 + 2 * take);
            let new_head = head + take as u64;
            let mut counter = Put::builder()
                .table_name(&self.table)
                .item(PART, s(HEAD_PART))
                .item(POS, n(0))
                .item(LAST, n(new_head));
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
            items.push(
                TransactWriteItem::builder()
                    .put(built(counter.build())?)
                    .build(),
            );
            for (i, event) in pending.iter().take(take).enumerate() {
                let pos = head + 1 + i as u64;
                let marker = Put::builder()
                    .table_name(&self.table)
                    .item(PART, s(format!("event#{}", event.event_id)))
                    .item(POS, n(0))
                    .item(AT, n(pos))
                    .condition_expression("attribute_not_exists(#p)")
                    .expression_attribute_names("#p", PART);
                items.push(
                    TransactWriteItem::builder()
                        .put(built(marker.build())?)
                        .build(),
                );
                let mut entry = envelope_item(event)?;
                entry.insert(HOUR.to_owned(), s(codec::hour_of(&event.occurred_at)));
                entry.insert(PART.to_owned(), s(FEED_PART));
                entry.insert(POS.to_owned(), n(pos));
                let entry = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(entry))
                    .condition_expression("attribute_not_exists(#p)")
                    .expression_attribute_names("#p", PART);
                items.push(
                    TransactWriteItem::builder()
                        .put(built(entry.build())?)
                        .build(),
                );
            }
            match ddb::transact(&self.client, &self.counters, items).await {
                Ok(()) => {
                    pending.drain(..take);
                    contention = 0;
                }
                Err(TxError::ConditionFailed(reasons)) => {
                    // Reason 0 is the counter; then marker, entry per event.
                    let already: HashSet<usize> = reasons
                        .iter()
                        .enumerate()
                        .skip(1)
                        .filter(|(i, r)| {
                            i % 2 == 1 && r.as_deref() == Some(CONDITIONAL_CHECK_FAILED)
                        })
                        .map(|(i, _)| (i - 1) / 2)
                        .collect();
                    if already.is_empty() {
                        contention += 1;
                        if contention > 20 {
                            return Err(StoreError::Unavailable(
                                "feed indexing kept losing the head counter to other indexers"
                                    .into(),
                            ));
                        }
                        tokio::time::sleep(self.retry.delay(contention.min(5))).await;
                    } else {
                        let mut i = 0;
                        pending.retain(|_| {
                            let keep = !already.contains(&i);
                            i += 1;
                            keep
                        });
                    }
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

    /// The highest position written (0 for an empty feed), read consistently.
    pub async fn head(&self) -> Result<u64, StoreError> {
        let item = self
            .retry
            .retry("GetItem", |_| {
                ddb::get_item(&self.client, &self.counters, &self.table, key(HEAD_PART, 0))
            })
            .await?;
        match item.as_ref().and_then(|i| i.number(LAST)) {
            None => Ok(0),
            Some(raw) => raw
                .parse()
                .map_err(|e| StoreError::Internal(format!("undecodable feed head {raw}: {e}"))),
        }
    }

    /// Feed entries with `after < position`, in position order, at most `limit`, each with
    /// `global_position` set.
    #[tracing::instrument(skip_all, fields(after = after, limit = limit), err)]
    pub async fn read(&self, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let head = self.head().await?;
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
                (":p".to_owned(), s(FEED_PART)),
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
            let event = decode_event(item)?;
            // Positions are gapless by construction; a hole would be an entry not visible yet,
            // and returning what follows it would let a reader skip it forever.
            if event.global_position != Some(expected) {
                break;
            }
            out.push(event);
        }
        Ok(out)
    }

    /// Feed entries with `after < position <= head` whose `occurred_at` is within `[from, to]`,
    /// in position order, at most `limit`, through the time index; `None` when the range spans
    /// more than [`MAX_INDEXED_HOURS`] hours (reading the feed is then cheaper).
    ///
    /// Each hour of the range is one Query (more pages only where the first and last hours hold
    /// events outside the range); every hour's first `limit` matches come back in position
    /// order, so the first `limit` of their merge are the page. The GSI is eventually
    /// consistent: an entry indexed a moment ago may not be found yet.
    #[tracing::instrument(skip_all, fields(after = after, %from, %to, limit = limit), err)]
    pub async fn read_between(
        &self,
        after: u64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        let first = codec::truncate_to_hour(&from);
        if to < from || limit == 0 {
            return Ok(Some(Vec::new()));
        }
        if (to - first).num_hours() >= MAX_INDEXED_HOURS {
            return Ok(None);
        }
        let head = self.head().await?;
        if head <= after {
            return Ok(Some(Vec::new()));
        }
        let mut out = Vec::new();
        let mut hour = first;
        while hour <= to {
            let spec = QuerySpec {
                table: self.table.clone(),
                index: Some(ResourceNames::FEED_BY_HOUR.to_owned()),
                key_condition: "#h = :h AND #q BETWEEN :from AND :to".into(),
                filter: Some("#t BETWEEN :lo AND :hi".into()),
                names: HashMap::from([
                    ("#h".to_owned(), HOUR.to_owned()),
                    ("#q".to_owned(), POS.to_owned()),
                    ("#t".to_owned(), codec::OCCURRED_AT.to_owned()),
                ]),
                values: HashMap::from([
                    (":h".to_owned(), s(codec::hour_of(&hour))),
                    (":from".to_owned(), n(after + 1)),
                    (":to".to_owned(), n(head)),
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
                out.push(decode_event(item)?);
            }
            hour += chrono::Duration::hours(1);
        }
        out.sort_by_key(|e| e.global_position);
        out.truncate(limit);
        Ok(Some(out))
    }
}
