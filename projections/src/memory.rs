//! An in-memory [`ReadModelStore`] for tests: the fake that lives beside the port.
//!
//! It keeps the exact semantics of the SQLite adapter (both pass the same conformance suite):
//! a batch runs against an overlay of the committed state and is merged only when it succeeds.

use crate::store::{
    apply_events, corrupt, ApplyOutcome, BatchTx, Decode, DocKey, DocTx, Document, Dump,
    EncodedDoc, EventBatch, HeldDoc, IndexEntry, Projection, ProjectionError, Query,
    ReadModelError, ReadModelResult, ReadModelStore, StoredDoc,
};
use async_trait::async_trait;
use commands::{FeedCursor, StreamRef};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

type Key = (String, String);
/// (index, partition, sort, collection, key)
type IdxKey = (String, String, String, String, String);
type Entries = Vec<(String, String, String)>;

#[derive(Default)]
struct MemState {
    docs: BTreeMap<Key, (Value, Entries)>,
    index: BTreeSet<IdxKey>,
    applied: HashMap<(String, StreamRef), u64>,
    checkpoints: HashMap<String, FeedCursor>,
}

impl MemState {
    fn write(&mut self, at: DocKey<'_>, doc: Option<(Value, Entries)>) {
        let DocKey { collection, key } = at;
        let k = at.owned();
        if let Some((_, old)) = self.docs.remove(&k) {
            for (i, p, s) in old {
                self.index
                    .remove(&(i, p, s, collection.to_owned(), key.to_owned()));
            }
        }
        if let Some((body, entries)) = doc {
            for (i, p, s) in &entries {
                self.index.insert((
                    i.clone(),
                    p.clone(),
                    s.clone(),
                    collection.to_owned(),
                    key.to_owned(),
                ));
            }
            self.docs.insert(k, (body, entries));
        }
    }

    fn last_applied(&self, projection: &str, stream: &StreamRef) -> u64 {
        self.applied
            .get(&(projection.to_owned(), stream.clone()))
            .copied()
            .unwrap_or(0)
    }
}

/// An encoded document as this store keeps it: its body parsed, its entries sorted.
fn stored(at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<(Value, Entries)> {
    let body = serde_json::from_str(&doc.body).map_err(|e| corrupt(at.collection, at.key, e))?;
    Ok((body, owned_entries(doc.index)))
}

fn owned_entries(index: Vec<IndexEntry>) -> Entries {
    let mut entries: Entries = index
        .into_iter()
        .map(|e| (e.index.to_owned(), e.partition, e.sort))
        .collect();
    entries.sort();
    entries.dedup();
    entries
}

/// The in-memory fake read-model store.
#[derive(Default)]
pub struct MemoryReadModelStore {
    state: Mutex<MemState>,
}

impl MemoryReadModelStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, MemState>, ReadModelError> {
        self.state
            .lock()
            .map_err(|_| ReadModelError::Internal("memory read model lock poisoned".into()))
    }

    /// Every document with its index entries, for whole-store comparisons in tests.
    pub fn dump(&self) -> Result<Dump, ReadModelError> {
        let state = self.lock()?;
        Ok(state
            .docs
            .iter()
            .map(|(k, (body, entries))| {
                (
                    k.clone(),
                    StoredDoc {
                        body: body.clone(),
                        index: entries.iter().cloned().collect(),
                    },
                )
            })
            .collect())
    }
}

/// A batch: the documents it reads or writes are held (typed, as their readers decode them)
/// over the committed state and merged on success.
struct MemTx<'a> {
    base: &'a MemState,
    projection: &'a str,
    /// `None`: deleted by the batch.
    docs: HashMap<Key, Option<Box<dyn Document>>>,
    applied: Vec<(StreamRef, u64)>,
}

impl DocTx for MemTx<'_> {
    fn get(&mut self, at: DocKey<'_>, decode: &Decode<'_>) -> Result<HeldDoc<'_>, ProjectionError> {
        let k = at.owned();
        if !self.docs.contains_key(&k) {
            let Some((body, _)) = self.base.docs.get(&k) else {
                return Ok(None);
            };
            let doc = decode(&body.to_string())?;
            self.docs.insert(k.clone(), Some(doc));
        }
        Ok(self.docs.get_mut(&k).and_then(|doc| doc.as_deref_mut()))
    }

    fn put(&mut self, at: DocKey<'_>, doc: Box<dyn Document>) -> ReadModelResult<()> {
        self.docs.insert(at.owned(), Some(doc));
        Ok(())
    }

    fn delete(&mut self, at: DocKey<'_>) -> ReadModelResult<()> {
        self.docs.insert(at.owned(), None);
        Ok(())
    }
}

impl BatchTx for MemTx<'_> {
    fn last_applied(&mut self, stream: &StreamRef) -> ReadModelResult<u64> {
        Ok(self.base.last_applied(self.projection, stream))
    }

    fn record_applied(&mut self, stream: &StreamRef, sequence: u64) -> ReadModelResult<()> {
        self.applied.push((stream.clone(), sequence));
        Ok(())
    }
}

#[async_trait]
impl ReadModelStore for MemoryReadModelStore {
    async fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        let mut state = self.lock()?;
        let name = batch.projection.name();
        let mut tx = MemTx {
            base: &state,
            projection: name,
            docs: HashMap::new(),
            applied: Vec::new(),
        };
        let outcome = apply_events(batch.projection.as_ref(), batch.events, &mut tx)?;
        let MemTx { docs, applied, .. } = tx;
        let mut writes = Vec::with_capacity(docs.len());
        for ((collection, key), doc) in docs {
            let doc = match doc {
                Some(doc) => {
                    let encoded = EncodedDoc::of(doc.as_ref(), &collection, &key)?;
                    Some(stored(DocKey::new(&collection, &key), encoded)?)
                }
                None => None,
            };
            writes.push((collection, key, doc));
        }
        for (collection, key, doc) in writes {
            state.write(DocKey::new(&collection, &key), doc);
        }
        for (stream, seq) in applied {
            state.applied.insert((name.to_owned(), stream), seq);
        }
        if let (ApplyOutcome::Applied { .. }, Some(position)) = (&outcome, batch.checkpoint) {
            let cp = state.checkpoints.entry(name.to_owned()).or_default();
            *cp = cp.max(&position);
        }
        Ok(outcome)
    }

    async fn checkpoint(&self, projection: &str) -> ReadModelResult<FeedCursor> {
        Ok(self
            .lock()?
            .checkpoints
            .get(projection)
            .cloned()
            .unwrap_or_default())
    }

    async fn last_applied(&self, projection: &str, stream: &StreamRef) -> ReadModelResult<u64> {
        Ok(self.lock()?.last_applied(projection, stream))
    }

    async fn get(&self, collection: &str, key: &str) -> ReadModelResult<Option<Value>> {
        Ok(self
            .lock()?
            .docs
            .get(&(collection.to_owned(), key.to_owned()))
            .map(|(b, _)| b.clone()))
    }

    async fn query(&self, query: Query<'_>) -> ReadModelResult<Vec<Value>> {
        let state = self.lock()?;
        let start = (
            query.index.to_owned(),
            query.partition.to_owned(),
            query.from.unwrap_or("").to_owned(),
            String::new(),
            String::new(),
        );
        let hits = state
            .index
            .range(start..)
            .take_while(|(i, p, s, _, _)| {
                i == query.index
                    && p == query.partition
                    && query.to.is_none_or(|to| s.as_str() <= to)
            })
            .map(|(_, _, _, c, k)| (c.clone(), k.clone()));
        let keys: Vec<Key> = if query.descending {
            let mut all: Vec<Key> = hits.collect();
            all.reverse();
            all.truncate(query.limit);
            all
        } else {
            hits.take(query.limit).collect()
        };
        Ok(keys
            .iter()
            .filter_map(|k| state.docs.get(k).map(|(b, _)| b.clone()))
            .collect())
    }

    async fn put_doc(&self, at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<()> {
        let doc = stored(at, doc)?;
        self.lock()?.write(at, Some(doc));
        Ok(())
    }

    async fn reset(&self, projection: &dyn Projection) -> ReadModelResult<()> {
        let mut state = self.lock()?;
        let collections = projection.collections();
        let doomed: Vec<Key> = state
            .docs
            .keys()
            .filter(|(c, _)| collections.contains(&c.as_str()))
            .cloned()
            .collect();
        for (c, k) in doomed {
            state.write(DocKey::new(&c, &k), None);
        }
        let name = projection.name();
        state.applied.retain(|(p, _), _| p != name);
        state.checkpoints.remove(name);
        Ok(())
    }
}
