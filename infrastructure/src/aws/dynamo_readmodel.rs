//! [`DynamoReadModelStore`]: the [`ReadModelStore`] port on three DynamoDB tables.
//!
//! | table | key | items |
//! |---|---|---|
//! | docs | `id` = `<collection>#<key>` | `collection`, `key`, `body` (JSON text), `idx` (JSON text: the document's index entries), `rev` N (bumped by every write) |
//! | index | `p` = `<index>#<partition>`, `s` = `<sort>\x01<collection>\x01<key>` | `collection`, `key`, `sort` |
//! | state | `id` = `applied#<projection>#<stream>` or `checkpoint#<projection>` | `projection`, and `last_seq` N or `cursor` S (a [`FeedCursor`]; `position` N before the feed had partitions) |
//!
//! Index entries are items of their own (not a GSI), so a query is one Query of the index
//! table in sort order (ties by collection and key, thanks to the `\x01` separators, which sort
//! below every other character) plus one consistent BatchGetItem of the documents. The
//! separator may not appear in sort keys, collections or keys.
//!
//! **Hot indexes** ([`Projection::hot_indexes`], given with
//! [`DynamoReadModelStore::with_hot_indexes`]) have few partitions that take many writes (every
//! order under one date partition). Their entries are spread over [`HOT_SHARDS`] partitions,
//! `<index>#<partition>\x01s<shard>`, the shard a stable hash of the document's collection and
//! key, so no partition of the index table takes every write. A query reads the shards and the
//! unsharded partition (entries written before the index was hot) and merges them in sort
//! order; rewriting a document deletes its entries in both forms, so old entries never linger.
//!
//! **apply_batch.** [`DocTx`] is synchronous, so the batch runs on a blocking thread
//! (`spawn_blocking`) and each document or bookkeeping read that misses the batch cache is a
//! consistent GetItem driven with `Handle::block_on`. (Prefetching cannot work: which documents
//! a projection reads depends on the event.) The whole batch is first applied in memory, so a
//! failing projection writes nothing. The writes then go out as ONE TransactWriteItems when they
//! fit in 100 actions, which is the usual case, with the applied sequences and the checkpoint in
//! it. A larger batch is split at event boundaries into transactions that each carry the applied
//! sequences of their own events (so a crash between them leaves a consistent prefix that a
//! redelivery skips) and the last of which carries the checkpoint.
//!
//! **Conditional writes.** Every transaction is conditional on what the batch read: each
//! applied-sequence item on the value it had (`last_seq = :read`, or absent), each document on
//! its `rev` (or absence), the checkpoint on its position. Two workers applying overlapping
//! batches therefore cannot both commit; the loser re-runs its batch from fresh reads, where the
//! events the winner applied are skipped as duplicates.
//!
//! **reset** scans the docs and state tables for the projection's items and deletes them with
//! BatchWriteItem. It is not atomic: if it fails, run it again before replaying.

use super::codec::{n, s, AttrSource, Item};
use super::ddb::{self, built, Filter, QuerySpec, TxError};
use super::error::{AwsFailure, RetryPolicy};
use super::metrics::{RequestCounters, RequestCounts};
use super::names::ResourceNames;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::builders::{DeleteBuilder, PutBuilder};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use commands::{EventEnvelope, FeedCursor, StreamRef};
use projections::store::{
    apply_events, corrupt, ApplyOutcome, BatchTx, Decode, DocKey, DocTx, Document, Dump,
    EncodedDoc, EventBatch, HeldDoc, Projection, ProjectionError, Query, ReadModelError,
    ReadModelResult, ReadModelStore, StoredDoc,
};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::runtime::Handle;

const ID: &str = "id";
const COLLECTION: &str = "collection";
const KEY: &str = "key";
const BODY: &str = "body";
const IDX: &str = "idx";
const REV: &str = "rev";
const P: &str = "p";
const S: &str = "s";
const SORT: &str = "sort";
const PROJECTION: &str = "projection";
const STREAM: &str = "stream";
const LAST_SEQ: &str = "last_seq";
/// A checkpoint written before the feed had partitions: a plain feed position.
const POSITION: &str = "position";
/// A checkpoint: the [`FeedCursor`] as text.
const CURSOR: &str = "cursor";
const SEP: char = '\u{1}';
const MAX_ACTIONS: usize = 100;
/// Partitions a hot index's partition is spread over.
pub const HOT_SHARDS: u32 = 8;
/// How many times a batch is re-run after losing a race to another writer.
const CONFLICT_ROUNDS: u32 = 8;

/// `(index, partition, sort)`, sorted and deduplicated within a document.
type Entry = (String, String, String);
/// A [`DocKey`] as owned strings, for maps.
type OwnedDocKey = (String, String);

/// A document as committed.
#[derive(Debug, Clone)]
struct Committed {
    /// JSON text.
    body: String,
    idx: Vec<Entry>,
    rev: u64,
}

fn doc_id(collection: &str, key: &str) -> String {
    format!("{collection}#{key}")
}

fn applied_id(projection: &str, stream: &str) -> String {
    format!("applied#{projection}#{stream}")
}

fn checkpoint_id(projection: &str) -> String {
    format!("checkpoint#{projection}")
}

fn id_key(id: String) -> Item {
    HashMap::from([(ID.to_owned(), s(id))])
}

fn index_key_in(p: String, entry: &Entry, collection: &str, key: &str) -> Item {
    HashMap::from([
        (P.to_owned(), s(p)),
        (
            S.to_owned(),
            s(format!("{}{SEP}{collection}{SEP}{key}", entry.2)),
        ),
    ])
}

/// The unsharded partition of an index partition.
fn partition_key(index: &str, partition: &str) -> String {
    format!("{index}#{partition}")
}

/// One shard of a hot index partition.
fn shard_key(index: &str, partition: &str, shard: u32) -> String {
    format!("{index}#{partition}{SEP}s{shard}")
}

/// The shard of a document: FNV-1a of its collection and key, the same in every process.
fn shard_of(collection: &str, key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in collection.bytes().chain([1u8]).chain(key.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash % HOT_SHARDS
}

fn check_text(what: &str, v: &str) -> Result<(), ReadModelError> {
    if v.contains(SEP) {
        return Err(ReadModelError::Internal(format!(
            "{what} {v:?} contains the reserved character U+0001"
        )));
    }
    Ok(())
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.number(name).and_then(|v| v.parse().ok())
}

/// A Put as one action of a TransactWriteItems.
fn tx_put(put: PutBuilder) -> Result<TransactWriteItem, AwsFailure> {
    Ok(TransactWriteItem::builder()
        .put(built(put.build())?)
        .build())
}

/// A Delete as one action of a TransactWriteItems.
fn tx_delete(delete: DeleteBuilder) -> Result<TransactWriteItem, AwsFailure> {
    Ok(TransactWriteItem::builder()
        .delete(built(delete.build())?)
        .build())
}

impl Inner {
    fn is_hot(&self, index: &str) -> bool {
        self.hot
            .get()
            .is_some_and(|hot| hot.contains(projections::generations::base_name(index)))
    }

    /// Where an entry is written: its shard for a hot index.
    fn index_key(&self, entry: &Entry, collection: &str, key: &str) -> Item {
        let (index, partition, _) = entry;
        let p = if self.is_hot(index) {
            shard_key(index, partition, shard_of(collection, key))
        } else {
            partition_key(index, partition)
        };
        index_key_in(p, entry, collection, key)
    }

    /// Every place an entry may be: for a hot index, its shard and the unsharded partition of
    /// entries written before the index was hot.
    fn index_keys(&self, entry: &Entry, collection: &str, key: &str) -> Vec<Item> {
        let mut keys = vec![self.index_key(entry, collection, key)];
        if self.is_hot(&entry.0) {
            keys.push(index_key_in(
                partition_key(&entry.0, &entry.1),
                entry,
                collection,
                key,
            ));
        }
        keys
    }
}

fn decode_doc(collection: &str, key: &str, item: &Item) -> Result<Committed, ReadModelError> {
    let body = item
        .string(BODY)
        .ok_or_else(|| corrupt(collection, key, "no body"))?;
    let idx = item
        .string(IDX)
        .ok_or_else(|| corrupt(collection, key, "no idx"))?;
    Ok(Committed {
        body: body.to_owned(),
        idx: serde_json::from_str(idx).map_err(|e| corrupt(collection, key, e))?,
        rev: number(item, REV).ok_or_else(|| corrupt(collection, key, "no rev"))?,
    })
}

struct Inner {
    client: Client,
    docs_table: String,
    index_table: String,
    state_table: String,
    retry: RetryPolicy,
    counters: RequestCounters,
    /// Hot indexes, by the names projections declare (any generation's prefix stripped); set
    /// once, at composition.
    hot: std::sync::OnceLock<std::collections::HashSet<String>>,
}

/// The DynamoDB read-model store. Cheap to clone.
#[derive(Clone)]
pub struct DynamoReadModelStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DynamoReadModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoReadModelStore")
            .field("docs_table", &self.inner.docs_table)
            .finish_non_exhaustive()
    }
}

/// Committed state read so far by one `apply_batch` run.
#[derive(Default)]
struct Known {
    docs: HashMap<OwnedDocKey, Option<Committed>>,
    /// stream key -> last applied sequence (0 when absent).
    applied: HashMap<String, u64>,
}

/// The writes of one transaction and the committed state they lead to.
#[derive(Default)]
struct Plan {
    items: Vec<TransactWriteItem>,
    docs: Vec<(OwnedDocKey, Option<Committed>)>,
    applied: Vec<(String, u64)>,
}

impl Known {
    fn absorb(&mut self, plan: Plan) {
        self.docs.extend(plan.docs);
        self.applied.extend(plan.applied);
    }
}

enum Attempt<T> {
    Done(T),
    /// A condition failed: another writer got there first.
    Conflict,
}

/// One transaction's view: committed state (fetched on demand) plus this batch's writes.
struct Batch<'a> {
    inner: &'a Inner,
    handle: &'a Handle,
    known: &'a mut Known,
    projection: &'a str,
    /// The documents this batch holds, typed as their readers decoded them (`None`: deleted).
    docs: HashMap<OwnedDocKey, Option<Box<dyn Document>>>,
    applied: HashMap<String, u64>,
}

impl<'a> Batch<'a> {
    fn new(
        inner: &'a Inner,
        handle: &'a Handle,
        known: &'a mut Known,
        projection: &'a str,
    ) -> Self {
        Self {
            inner,
            handle,
            known,
            projection,
            docs: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    fn committed(&mut self, at: DocKey<'_>) -> ReadModelResult<Option<&Committed>> {
        let k = at.owned();
        if !self.known.docs.contains_key(&k) {
            let doc = self.handle.block_on(self.inner.fetch_doc(at))?;
            self.known.docs.insert(k.clone(), doc);
        }
        Ok(self.known.docs.get(&k).and_then(Option::as_ref))
    }

    fn set(&mut self, at: DocKey<'_>, doc: Option<Box<dyn Document>>) -> ReadModelResult<()> {
        check_text("collection", at.collection)?;
        check_text("key", at.key)?;
        // The committed revision and index entries are needed to write conditionally and to
        // remove entries the document no longer has.
        self.committed(at)?;
        self.docs.insert(at.owned(), doc);
        Ok(())
    }

    /// The transaction items for everything this batch changed.
    fn plan(self) -> Result<Plan, ReadModelError> {
        let inner = self.inner;
        let mut plan = Plan::default();
        for ((collection, key), held) in self.docs {
            let new = match held {
                Some(doc) => {
                    let encoded = EncodedDoc::of(doc.as_ref(), &collection, &key)?;
                    let mut entries: Vec<Entry> = Vec::with_capacity(encoded.index.len());
                    for e in encoded.index {
                        check_text("index", e.index)?;
                        check_text("sort key", &e.sort)?;
                        entries.push((e.index.to_owned(), e.partition, e.sort));
                    }
                    entries.sort_unstable();
                    entries.dedup();
                    Some((encoded.body, entries))
                }
                None => None,
            };
            let old = self
                .known
                .docs
                .get(&(collection.clone(), key.clone()))
                .cloned()
                .flatten();
            let unchanged = match (&old, &new) {
                (Some(o), Some((body, idx))) => &o.body == body && &o.idx == idx,
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                continue;
            }
            let old_idx: &[Entry] = old.as_ref().map_or(&[], |o| &o.idx);
            let new_idx: &[Entry] = new.as_ref().map_or(&[], |(_, idx)| idx);
            for entry in old_idx.iter().filter(|e| new_idx.binary_search(e).is_err()) {
                for place in inner.index_keys(entry, &collection, &key) {
                    let delete = Delete::builder()
                        .table_name(&inner.index_table)
                        .set_key(Some(place));
                    plan.items.push(tx_delete(delete)?);
                }
            }
            for entry in new_idx.iter().filter(|e| old_idx.binary_search(e).is_err()) {
                let mut item = inner.index_key(entry, &collection, &key);
                item.insert(COLLECTION.into(), s(collection.clone()));
                item.insert(KEY.into(), s(key.clone()));
                item.insert(SORT.into(), s(entry.2.clone()));
                let put = Put::builder()
                    .table_name(&inner.index_table)
                    .set_item(Some(item));
                plan.items.push(tx_put(put)?);
            }
            let id = doc_id(&collection, &key);
            let next = match new {
                Some((body, idx)) => {
                    let rev = old.as_ref().map_or(1, |o| o.rev + 1);
                    let idx_text =
                        serde_json::to_string(&idx).map_err(|e| corrupt(&collection, &key, e))?;
                    let mut put = Put::builder()
                        .table_name(&inner.docs_table)
                        .item(ID, s(id))
                        .item(COLLECTION, s(collection.clone()))
                        .item(KEY, s(key.clone()))
                        .item(BODY, s(body.clone()))
                        .item(IDX, s(idx_text))
                        .item(REV, n(rev));
                    put = match &old {
                        None => put
                            .condition_expression("attribute_not_exists(#id)")
                            .expression_attribute_names("#id", ID),
                        Some(o) => put
                            .condition_expression("#rev = :rev")
                            .expression_attribute_names("#rev", REV)
                            .expression_attribute_values(":rev", n(o.rev)),
                    };
                    plan.items.push(tx_put(put)?);
                    Some(Committed { body, idx, rev })
                }
                None => {
                    if let Some(o) = &old {
                        let delete = Delete::builder()
                            .table_name(&inner.docs_table)
                            .set_key(Some(id_key(id)))
                            .condition_expression("#rev = :rev")
                            .expression_attribute_names("#rev", REV)
                            .expression_attribute_values(":rev", n(o.rev));
                        plan.items.push(tx_delete(delete)?);
                    }
                    None
                }
            };
            plan.docs.push(((collection, key), next));
        }
        for (stream, seq) in self.applied {
            let read = self.known.applied.get(&stream).copied().unwrap_or(0);
            let mut put = Put::builder()
                .table_name(&inner.state_table)
                .item(ID, s(applied_id(self.projection, &stream)))
                .item(PROJECTION, s(self.projection))
                .item(STREAM, s(stream.clone()))
                .item(LAST_SEQ, n(seq));
            put = if read == 0 {
                put.condition_expression("attribute_not_exists(#id)")
                    .expression_attribute_names("#id", ID)
            } else {
                put.condition_expression("#l = :read")
                    .expression_attribute_names("#l", LAST_SEQ)
                    .expression_attribute_values(":read", n(read))
            };
            plan.items.push(tx_put(put)?);
            plan.applied.push((stream, seq));
        }
        Ok(plan)
    }
}

impl DocTx for Batch<'_> {
    fn get(&mut self, at: DocKey<'_>, decode: &Decode<'_>) -> Result<HeldDoc<'_>, ProjectionError> {
        let k = at.owned();
        if !self.docs.contains_key(&k) {
            let doc = match self.committed(at)? {
                Some(committed) => decode(&committed.body)?,
                None => return Ok(None),
            };
            self.docs.insert(k.clone(), Some(doc));
        }
        Ok(self.docs.get_mut(&k).and_then(|doc| doc.as_deref_mut()))
    }

    fn put(&mut self, at: DocKey<'_>, doc: Box<dyn Document>) -> ReadModelResult<()> {
        self.set(at, Some(doc))
    }

    fn delete(&mut self, at: DocKey<'_>) -> ReadModelResult<()> {
        self.set(at, None)
    }
}

impl BatchTx for Batch<'_> {
    fn last_applied(&mut self, stream: &StreamRef) -> ReadModelResult<u64> {
        let k = stream.key();
        if let Some(seq) = self.known.applied.get(&k) {
            return Ok(*seq);
        }
        let seq = self
            .handle
            .block_on(self.inner.fetch_applied(self.projection, &k))?;
        self.known.applied.insert(k, seq);
        Ok(seq)
    }

    fn record_applied(&mut self, stream: &StreamRef, sequence: u64) -> ReadModelResult<()> {
        self.applied.insert(stream.key(), sequence);
        Ok(())
    }
}

impl Inner {
    async fn get_state(&self, id: String) -> ReadModelResult<Option<Item>> {
        let key = id_key(id);
        Ok(self
            .retry
            .retry("GetItem", |_| {
                ddb::get_item(&self.client, &self.counters, &self.state_table, key.clone())
            })
            .await?)
    }

    async fn fetch_doc(&self, at: DocKey<'_>) -> ReadModelResult<Option<Committed>> {
        let DocKey { collection, key } = at;
        let id = id_key(doc_id(collection, key));
        let item = self
            .retry
            .retry("GetItem", |_| {
                ddb::get_item(&self.client, &self.counters, &self.docs_table, id.clone())
            })
            .await?;
        item.map(|i| decode_doc(collection, key, &i)).transpose()
    }

    async fn fetch_applied(&self, projection: &str, stream: &str) -> ReadModelResult<u64> {
        let item = self.get_state(applied_id(projection, stream)).await?;
        Ok(item.and_then(|i| number(&i, LAST_SEQ)).unwrap_or(0))
    }

    /// The stored checkpoint, and the attribute and value that a write must find unchanged: the
    /// cursor text, or the plain number of a checkpoint written before the feed had partitions.
    async fn fetch_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<(FeedCursor, &'static str, AttributeValue)>, ReadModelError> {
        let Some(item) = self.get_state(checkpoint_id(projection)).await? else {
            return Ok(None);
        };
        let bad = |raw: &str, e: &dyn std::fmt::Display| {
            corrupt("checkpoint", projection, format!("{raw:?}: {e}"))
        };
        if let Some(text) = item.string(CURSOR) {
            let cursor = text.parse().map_err(|e| bad(text, &e))?;
            return Ok(Some((cursor, CURSOR, s(text))));
        }
        match number(&item, POSITION) {
            Some(p) => Ok(Some((FeedCursor::at(p), POSITION, n(p)))),
            None => Err(bad("", &"neither a cursor nor a position")),
        }
    }

    /// Commits one transaction from a blocking thread, retrying transient failures.
    fn commit(
        &self,
        handle: &Handle,
        items: Vec<TransactWriteItem>,
    ) -> Result<Attempt<()>, ReadModelError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match handle.block_on(ddb::transact(&self.client, &self.counters, items.clone())) {
                Ok(()) => return Ok(Attempt::Done(())),
                Err(TxError::ConditionFailed(_)) => return Ok(Attempt::Conflict),
                Err(TxError::Failed(f))
                    if f.transient && attempt < self.retry.max_attempts.max(1) =>
                {
                    tracing::warn!(attempt, error = %f, "read model transaction failed transiently, retrying");
                    std::thread::sleep(self.retry.delay(attempt));
                }
                Err(TxError::Failed(f)) => return Err(f.into()),
            }
        }
    }

    /// The checkpoint Put when `position` moves the projection's checkpoint forward in some
    /// partition (the stored cursor becomes the larger of the two in each).
    fn checkpoint_write(
        &self,
        handle: &Handle,
        projection: &str,
        position: &FeedCursor,
    ) -> Result<Option<TransactWriteItem>, ReadModelError> {
        let current = handle.block_on(self.fetch_checkpoint(projection))?;
        let next = match &current {
            Some((c, ..)) if c.covers(position) => return Ok(None),
            Some((c, ..)) => c.max(position),
            None => position.clone(),
        };
        let mut put = Put::builder()
            .table_name(&self.state_table)
            .item(ID, s(checkpoint_id(projection)))
            .item(PROJECTION, s(projection))
            .item(CURSOR, s(next.to_string()));
        put = match current {
            None => put
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", ID),
            Some((_, attribute, value)) => put
                .condition_expression("#c = :read")
                .expression_attribute_names("#c", attribute)
                .expression_attribute_values(":read", value),
        };
        Ok(Some(tx_put(put)?))
    }

    /// One run of `apply_batch` from fresh reads (see the module docs).
    fn try_apply(
        &self,
        handle: &Handle,
        projection: &dyn Projection,
        events: &[EventEnvelope],
        checkpoint: Option<&FeedCursor>,
    ) -> Result<Attempt<ApplyOutcome>, ReadModelError> {
        let name = projection.name();
        let mut known = Known::default();
        let (outcome, plan) = {
            let mut tx = Batch::new(self, handle, &mut known, name);
            let outcome = apply_events(projection, events.to_vec(), &mut tx)?;
            (outcome, tx.plan()?)
        };
        let consumed = match &outcome {
            ApplyOutcome::Applied { .. } => events.len(),
            ApplyOutcome::Gap { remaining, .. } => events.len() - remaining.len(),
        };
        let checkpoint_put = match (&outcome, checkpoint) {
            (ApplyOutcome::Applied { .. }, Some(position)) => {
                self.checkpoint_write(handle, name, position)?
            }
            _ => None,
        };

        if plan.items.len() + usize::from(checkpoint_put.is_some()) <= MAX_ACTIONS {
            let mut items = plan.items;
            items.extend(checkpoint_put);
            if items.is_empty() {
                return Ok(Attempt::Done(outcome));
            }
            return Ok(match self.commit(handle, items)? {
                Attempt::Done(()) => Attempt::Done(outcome),
                Attempt::Conflict => Attempt::Conflict,
            });
        }

        // Too many writes for one transaction: commit event groups that fit, in order.
        let mut start = 0;
        let mut size = consumed;
        while start < consumed {
            let end = (start + size).min(consumed);
            let plan = {
                let mut tx = Batch::new(self, handle, &mut known, name);
                apply_events(projection, events[start..end].to_vec(), &mut tx)?;
                tx.plan()?
            };
            let last = end == consumed;
            let extra = usize::from(last && checkpoint_put.is_some());
            if plan.items.len() + extra > MAX_ACTIONS {
                if end - start == 1 {
                    return Err(ReadModelError::Internal(format!(
                        "one event of projection {name} needs {} writes, more than a transaction holds",
                        plan.items.len()
                    )));
                }
                size = ((end - start) / 2).max(1);
                continue;
            }
            let mut items = plan.items.clone();
            if last {
                items.extend(checkpoint_put.clone());
            }
            if !items.is_empty() {
                if let Attempt::Conflict = self.commit(handle, items)? {
                    return Ok(Attempt::Conflict);
                }
            }
            known.absorb(plan);
            start = end;
        }
        Ok(Attempt::Done(outcome))
    }
}

impl DynamoReadModelStore {
    /// A store over the read-model tables of `names` (which must exist: see [`super::provision`]).
    pub fn new(client: Client, names: &ResourceNames, retry: RetryPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                docs_table: names.docs_table.clone(),
                index_table: names.index_table.clone(),
                state_table: names.readmodel_state_table.clone(),
                retry,
                counters: RequestCounters::default(),
                hot: Default::default(),
            }),
        }
    }

    /// Spreads the entries of `indexes` over [`HOT_SHARDS`] partitions (see the module docs).
    /// Every process of a stage must give the same ones; only the first call counts.
    pub fn with_hot_indexes<'a>(self, indexes: impl IntoIterator<Item = &'a str>) -> Self {
        let _ = self
            .inner
            .hot
            .set(indexes.into_iter().map(str::to_owned).collect());
        self
    }

    /// Requests this store made so far.
    pub fn counts(&self) -> RequestCounts {
        self.inner.counters.snapshot()
    }

    /// Runs `f` on a blocking thread with the runtime handle, for the synchronous [`DocTx`] path.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ReadModelError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Handle) -> Result<T, ReadModelError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let handle = Handle::current();
        tokio::task::spawn_blocking(move || f(&inner, &handle))
            .await
            .map_err(|e| ReadModelError::Internal(format!("read model task failed: {e}")))?
    }

    /// Every document with its index entries (tests compare whole stores with it). Scans.
    pub async fn dump(&self) -> Result<Dump, ReadModelError> {
        let inner = &self.inner;
        let items = inner
            .retry
            .retry("Scan", |_| {
                ddb::scan_all(&inner.client, &inner.counters, &inner.docs_table, None)
            })
            .await?;
        let mut dump = Dump::new();
        for item in &items {
            let collection = item.string(COLLECTION).unwrap_or_default().to_owned();
            let key = item.string(KEY).unwrap_or_default().to_owned();
            let doc = decode_doc(&collection, &key, item)?;
            let index: BTreeSet<Entry> = doc.idx.into_iter().collect();
            let body =
                serde_json::from_str(&doc.body).map_err(|e| corrupt(&collection, &key, e))?;
            dump.insert((collection, key), StoredDoc { body, index });
        }
        Ok(dump)
    }

    async fn scan_matching(&self, table: &str, filter: Filter) -> Result<Vec<Item>, AwsFailure> {
        let inner = &self.inner;
        inner
            .retry
            .retry("Scan", |_| {
                ddb::scan_all(&inner.client, &inner.counters, table, Some(&filter))
            })
            .await
    }

    async fn delete_keys(&self, table: &str, keys: Vec<Item>) -> Result<(), AwsFailure> {
        let inner = &self.inner;
        inner
            .retry
            .retry("BatchWriteItem", |_| {
                ddb::batch_delete(&inner.client, &inner.counters, table, keys.clone())
            })
            .await
    }
}

fn id_keys(items: &[Item]) -> Vec<Item> {
    items
        .iter()
        .filter_map(|i| {
            i.get(ID)
                .map(|id| HashMap::from([(ID.to_owned(), id.clone())]))
        })
        .collect()
}

#[async_trait]
impl ReadModelStore for DynamoReadModelStore {
    #[tracing::instrument(skip_all, fields(projection = batch.projection.name(), events = batch.events.len()), err)]
    async fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        self.blocking(move |inner, handle| {
            let EventBatch {
                projection,
                events,
                checkpoint,
            } = &batch;
            for round in 1..=CONFLICT_ROUNDS {
                match inner.try_apply(handle, projection.as_ref(), events, checkpoint.as_ref())? {
                    Attempt::Done(outcome) => return Ok(outcome),
                    Attempt::Conflict => {
                        tracing::debug!(round, "read model batch lost a race, re-running it");
                        std::thread::sleep(inner.retry.delay(round));
                    }
                }
            }
            Err(ReadModelError::Unavailable(format!(
                "projection {} kept conflicting with concurrent writers",
                projection.name()
            )))
        })
        .await
    }

    async fn checkpoint(&self, projection: &str) -> ReadModelResult<FeedCursor> {
        Ok(self
            .inner
            .fetch_checkpoint(projection)
            .await?
            .map(|(cursor, ..)| cursor)
            .unwrap_or_default())
    }

    async fn last_applied(&self, projection: &str, stream: &StreamRef) -> ReadModelResult<u64> {
        self.inner.fetch_applied(projection, &stream.key()).await
    }

    async fn get(&self, collection: &str, key: &str) -> ReadModelResult<Option<Value>> {
        self.inner
            .fetch_doc(DocKey::new(collection, key))
            .await?
            .map(|d| serde_json::from_str(&d.body).map_err(|e| corrupt(collection, key, e)))
            .transpose()
    }

    #[tracing::instrument(skip_all, fields(index = %query.index, partition = %query.partition, descending = query.descending, limit = query.limit), err)]
    async fn query(&self, query: Query<'_>) -> ReadModelResult<Vec<Value>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut values = HashMap::new();
        // `s` is `<sort>\x01<collection>\x01<key>`: everything with sort >= from is >= from, and
        // everything with sort <= to is below `to\x01\u{10FFFF}`.
        let hi = query.to.map(|t| format!("{t}{SEP}\u{10FFFF}"));
        let range = match (query.from, hi) {
            (Some(lo), Some(hi)) => {
                values.insert(":lo".into(), s(lo));
                values.insert(":hi".into(), s(hi));
                " AND #s BETWEEN :lo AND :hi"
            }
            (Some(lo), None) => {
                values.insert(":lo".into(), s(lo));
                " AND #s >= :lo"
            }
            (None, Some(hi)) => {
                values.insert(":hi".into(), s(hi));
                " AND #s <= :hi"
            }
            (None, None) => "",
        };
        let mut names = HashMap::from([("#p".to_owned(), P.to_owned())]);
        if !range.is_empty() {
            names.insert("#s".to_owned(), S.to_owned());
        }
        let spec = QuerySpec {
            table: inner.index_table.clone(),
            key_condition: format!("#p = :p{range}"),
            names,
            values,
            forward: !query.descending,
            limit: Some(query.limit),
            consistent: true,
            ..QuerySpec::default()
        };
        let mut partitions = vec![partition_key(query.index, query.partition)];
        if inner.is_hot(query.index) {
            partitions.extend(
                (0..HOT_SHARDS).map(|shard| shard_key(query.index, query.partition, shard)),
            );
        }
        let merged = partitions.len() > 1;
        let reads =
            partitions.into_iter().map(|p| {
                let mut spec = spec.clone();
                spec.values.insert(":p".to_owned(), s(p));
                async move {
                    ddb::query_retried(&inner.client, &inner.counters, &inner.retry, &spec).await
                }
            });
        let mut entries: Vec<Item> = Vec::new();
        for read in futures::future::join_all(reads).await {
            entries.extend(read?);
        }
        // Each partition came in sort order; together they are merged the same way (`s` is
        // sort, collection, key), and the first `limit` kept.
        if merged {
            entries.sort_by(|a, b| {
                let order = a.string(S).cmp(&b.string(S));
                if query.descending {
                    order.reverse()
                } else {
                    order
                }
            });
            entries.truncate(query.limit);
        }
        let ids: Vec<String> = entries
            .iter()
            .filter_map(|e| Some(doc_id(e.string(COLLECTION)?, e.string(KEY)?)))
            .collect();
        let mut unique: Vec<Item> = Vec::with_capacity(ids.len());
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            if seen.insert(id.as_str()) {
                unique.push(id_key(id.clone()));
            }
        }
        let docs = inner
            .retry
            .retry("BatchGetItem", |_| {
                ddb::batch_get(
                    &inner.client,
                    &inner.counters,
                    &inner.docs_table,
                    unique.clone(),
                )
            })
            .await?;
        let mut by_id: HashMap<String, Value> = HashMap::with_capacity(docs.len());
        for item in &docs {
            let collection = item.string(COLLECTION).unwrap_or_default();
            let key = item.string(KEY).unwrap_or_default();
            let doc = decode_doc(collection, key, item)?;
            let body = serde_json::from_str(&doc.body).map_err(|e| corrupt(collection, key, e))?;
            by_id.insert(doc_id(collection, key), body);
        }
        // An entry whose document vanished in between (a concurrent delete) is left out.
        Ok(ids.iter().filter_map(|id| by_id.get(id).cloned()).collect())
    }

    #[tracing::instrument(skip_all, fields(collection = %at.collection, key = %at.key), err)]
    async fn put_doc(&self, at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<()> {
        let (collection, key) = at.owned();
        self.blocking(move |inner, handle| {
            let at = DocKey::new(&collection, &key);
            for round in 1..=CONFLICT_ROUNDS {
                let mut known = Known::default();
                let mut tx = Batch::new(inner, handle, &mut known, "");
                tx.put(at, Box::new(doc.clone()))?;
                let plan = tx.plan()?;
                if plan.items.is_empty() {
                    return Ok(());
                }
                match inner.commit(handle, plan.items)? {
                    Attempt::Done(()) => return Ok(()),
                    Attempt::Conflict => std::thread::sleep(inner.retry.delay(round)),
                }
            }
            Err(ReadModelError::Unavailable(format!(
                "document {collection}/{key} kept changing under put_doc"
            )))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(projection = projection.name()), err)]
    async fn reset(&self, projection: &dyn Projection) -> ReadModelResult<()> {
        let collections = projection.collections();
        if !collections.is_empty() {
            let mut values = HashMap::new();
            let mut terms = Vec::new();
            for (i, c) in collections.iter().enumerate() {
                values.insert(format!(":c{i}"), s(*c));
                terms.push(format!("#c = :c{i}"));
            }
            let filter = Filter {
                expression: terms.join(" OR "),
                names: HashMap::from([("#c".to_owned(), COLLECTION.to_owned())]),
                values,
            };
            let docs = self.scan_matching(&self.inner.docs_table, filter).await?;
            // Index entries first: a reset that fails half-way and is run again still finds
            // the documents that list the entries left.
            let mut index_keys = Vec::new();
            for item in &docs {
                let collection = item.string(COLLECTION).unwrap_or_default();
                let key = item.string(KEY).unwrap_or_default();
                let doc = decode_doc(collection, key, item)?;
                for entry in &doc.idx {
                    index_keys.extend(self.inner.index_keys(entry, collection, key));
                }
            }
            self.delete_keys(&self.inner.index_table, index_keys)
                .await?;
            self.delete_keys(&self.inner.docs_table, id_keys(&docs))
                .await?;
        }
        let state = self
            .scan_matching(
                &self.inner.state_table,
                Filter {
                    expression: "#pr = :pr".to_owned(),
                    names: HashMap::from([("#pr".to_owned(), PROJECTION.to_owned())]),
                    values: HashMap::from([(":pr".to_owned(), s(projection.name()))]),
                },
            )
            .await?;
        self.delete_keys(&self.inner.state_table, id_keys(&state))
            .await?;
        Ok(())
    }
}
