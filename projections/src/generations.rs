//! Blue/green read models: each projection's documents live in a *generation*, a read-model
//! store of their own, and a rebuild builds the next generation beside the live one while
//! queries keep reading the live one. When the new generation has caught up with the feed it is
//! promoted: one pointer switch that every reader sees at once, after which the old generation
//! is dropped. No query ever sees a half-built read model.
//!
//! [`GenerationRouter`] is the read-model store the rest of the process uses: a decorator that
//! sends each call to the live generation of the projection that owns the projection name,
//! collection or index it names. [`Generations`] is the port that makes and promotes
//! generations (an adapter's files or tables); [`crate::ProjectionRunner::rebuild_blue_green`]
//! drives a rebuild through it.
//!
//! A generation can be a store of its own (the embedded backend: a file per generation) or a
//! [`Namespaced`] part of a shared one (DynamoDB: the same tables, every name of the generation
//! prefixed), which works over any adapter.

use crate::store::{
    corrupt, ApplyOutcome, Decode, DocKey, DocTx, Document, EncodedDoc, EventBatch, HeldDoc,
    IndexEntry, Projection, ProjectionError, Query, ReadModelError, ReadModelResult,
    ReadModelStore,
};
use async_trait::async_trait;
use commands::{EventEnvelope, FeedCursor, StreamRef};
use domain::StreamType;
use serde_json::Value;
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A new generation of a projection's read model: its number and its store.
#[derive(Clone)]
pub struct Prepared {
    pub generation: u64,
    pub store: Arc<dyn ReadModelStore>,
}

/// Makes and promotes the generations of projections' read models.
#[async_trait]
pub trait Generations: Send + Sync + 'static {
    /// A new, empty generation for `projection`, beside its live one.
    async fn prepare(&self, projection: &dyn Projection) -> ReadModelResult<Prepared>;
    /// Makes `next` (from [`Generations::prepare`]) the live generation of `projection`, for
    /// every reader at once and durably. The generation it replaces is dropped by
    /// [`Generations::drop_replaced`]; returns its number.
    async fn promote(&self, projection: &dyn Projection, next: &Prepared) -> ReadModelResult<u64>;
    /// How long other processes may still write the replaced generation after a promotion
    /// (they look the pointer up that often). The rebuild waits that long and catches the new
    /// generation up once more before dropping the old one. Zero where one process owns it.
    fn propagation(&self) -> Duration {
        Duration::ZERO
    }
    /// Drops `generation` of `projection`, replaced by a promotion and read by nobody now.
    async fn drop_replaced(
        &self,
        projection: &dyn Projection,
        generation: u64,
    ) -> ReadModelResult<()>;
}

/// Names live as long as the process: generations are few, and each name is kept once.
fn intern(name: String) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(name.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

type NameLists = HashMap<Vec<&'static str>, &'static [&'static str]>;

fn intern_all(prefix: &str, names: &[&'static str]) -> &'static [&'static str] {
    static LISTS: Mutex<Option<NameLists>> = Mutex::new(None);
    let renamed: Vec<&'static str> = names
        .iter()
        .map(|n| intern(format!("{prefix}{n}")))
        .collect();
    let mut lists = LISTS.lock().unwrap_or_else(|p| p.into_inner());
    let lists = lists.get_or_insert_with(HashMap::new);
    if let Some(known) = lists.get(&renamed) {
        return known;
    }
    let leaked: &'static [&'static str] = Box::leak(renamed.clone().into_boxed_slice());
    lists.insert(renamed, leaked);
    leaked
}

/// The prefix of generation `generation`'s names (`g3~`); generation 0 has none, so the read
/// models written before generations existed are generation 0.
pub fn generation_prefix(generation: u64) -> String {
    match generation {
        0 => String::new(),
        n => format!("g{n}~"),
    }
}

/// `name` without the prefix of its generation: what the projection declared.
pub fn base_name(name: &str) -> &str {
    let Some(rest) = name.strip_prefix('g') else {
        return name;
    };
    match rest.split_once('~') {
        Some((digits, base))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    }
}

/// One generation inside a shared store: every projection, collection and index name it uses
/// is prefixed, so its documents, index entries, applied sequences and checkpoint sit beside
/// the other generations' without touching them.
pub struct Namespaced {
    inner: Arc<dyn ReadModelStore>,
    prefix: String,
}

impl Namespaced {
    pub fn new(inner: Arc<dyn ReadModelStore>, generation: u64) -> Self {
        Self {
            inner,
            prefix: generation_prefix(generation),
        }
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `names`'s names with this generation's prefix, applying as `inner`.
    fn renamed(&self, names: &dyn Projection, inner: Arc<dyn Projection>) -> Renamed {
        Renamed {
            name: intern(self.name(names.name())),
            collections: intern_all(&self.prefix, names.collections()),
            indexes: intern_all(&self.prefix, names.indexes()),
            prefix: self.prefix.clone(),
            inner,
        }
    }
}

/// A projection whose names carry a generation's prefix.
struct Renamed {
    inner: Arc<dyn Projection>,
    prefix: String,
    name: &'static str,
    collections: &'static [&'static str],
    indexes: &'static [&'static str],
}

impl Projection for Renamed {
    fn name(&self) -> &'static str {
        self.name
    }
    fn collections(&self) -> &'static [&'static str] {
        self.collections
    }
    fn indexes(&self) -> &'static [&'static str] {
        self.indexes
    }
    fn streams(&self) -> &'static [StreamType] {
        self.inner.streams()
    }
    fn handles(&self, event: &EventEnvelope) -> bool {
        self.inner.handles(event)
    }
    fn version(&self) -> u32 {
        self.inner.version()
    }
    fn apply(&self, event: &EventEnvelope, tx: &mut dyn DocTx) -> Result<(), ProjectionError> {
        self.inner.apply(
            event,
            &mut RenamingTx {
                inner: tx,
                prefix: &self.prefix,
            },
        )
    }
}

/// The transaction a [`Renamed`] projection sees: collections and index entries get the prefix
/// on their way in; documents come back as the projection's own types.
struct RenamingTx<'a> {
    inner: &'a mut dyn DocTx,
    prefix: &'a str,
}

impl RenamingTx<'_> {
    /// The collection of `at` with the prefix.
    fn collection(&self, at: DocKey<'_>) -> String {
        format!("{}{}", self.prefix, at.collection)
    }
}

impl DocTx for RenamingTx<'_> {
    fn get(&mut self, at: DocKey<'_>, decode: &Decode<'_>) -> Result<HeldDoc<'_>, ProjectionError> {
        let prefix = self.prefix;
        let wrap = |text: &str| -> Result<Box<dyn Document>, ProjectionError> {
            Ok(Box::new(RenamedDoc {
                inner: decode(text)?,
                prefix: prefix.to_owned(),
            }))
        };
        let collection = self.collection(at);
        self.inner.get(DocKey::new(&collection, at.key), &wrap)
    }

    fn put(&mut self, at: DocKey<'_>, doc: Box<dyn Document>) -> ReadModelResult<()> {
        let doc = RenamedDoc {
            inner: doc,
            prefix: self.prefix.to_owned(),
        };
        let collection = self.collection(at);
        self.inner
            .put(DocKey::new(&collection, at.key), Box::new(doc))
    }

    fn delete(&mut self, at: DocKey<'_>) -> ReadModelResult<()> {
        let collection = self.collection(at);
        self.inner.delete(DocKey::new(&collection, at.key))
    }
}

/// A projection's document whose index entries get the prefix when it is encoded; to the
/// projection it is its own type (`as_any_mut` is the inner document's).
struct RenamedDoc {
    inner: Box<dyn Document>,
    prefix: String,
}

impl Document for RenamedDoc {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self.inner.as_any_mut()
    }

    fn encode(&self) -> Result<EncodedDoc, serde_json::Error> {
        let mut encoded = self.inner.encode()?;
        for entry in &mut encoded.index {
            entry.index = intern(format!("{}{}", self.prefix, entry.index));
        }
        Ok(encoded)
    }
}

#[async_trait]
impl ReadModelStore for Namespaced {
    async fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        let name = batch.projection.name();
        let renamed: Arc<dyn Projection> =
            Arc::new(self.renamed(batch.projection.as_ref(), batch.projection.clone()));
        // A failing projection is named as the caller knows it.
        self.inner
            .apply_batch(EventBatch {
                projection: renamed,
                ..batch
            })
            .await
            .map_err(|e| match e {
                ReadModelError::Projection {
                    event_id,
                    event_type,
                    source,
                    ..
                } => ReadModelError::Projection {
                    projection: name,
                    event_id,
                    event_type,
                    source,
                },
                other => other,
            })
    }

    async fn checkpoint(&self, projection: &str) -> ReadModelResult<FeedCursor> {
        self.inner.checkpoint(&self.name(projection)).await
    }

    async fn last_applied(&self, projection: &str, stream: &StreamRef) -> ReadModelResult<u64> {
        let projection = self.name(projection);
        self.inner.last_applied(&projection, stream).await
    }

    async fn get(&self, collection: &str, key: &str) -> ReadModelResult<Option<Value>> {
        self.inner.get(&self.name(collection), key).await
    }

    async fn query(&self, query: Query<'_>) -> ReadModelResult<Vec<Value>> {
        let index = self.name(query.index);
        self.inner
            .query(Query {
                index: &index,
                ..query
            })
            .await
    }

    async fn put_doc(&self, at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<()> {
        let index = doc
            .index
            .into_iter()
            .map(|e| IndexEntry {
                index: intern(self.name(e.index)),
                ..e
            })
            .collect();
        let collection = self.name(at.collection);
        let at = DocKey::new(&collection, at.key);
        self.inner.put_doc(at, EncodedDoc { index, ..doc }).await
    }

    async fn reset(&self, projection: &dyn Projection) -> ReadModelResult<()> {
        let names = self.renamed(projection, Arc::new(NamesOnly));
        self.inner.reset(&names).await
    }

    async fn purge(&self) -> ReadModelResult<()> {
        self.inner.purge().await
    }
}

/// Stands in for a projection where only its names are needed (a reset).
struct NamesOnly;

impl Projection for NamesOnly {
    fn name(&self) -> &'static str {
        ""
    }
    fn collections(&self) -> &'static [&'static str] {
        &[]
    }
    fn indexes(&self) -> &'static [&'static str] {
        &[]
    }
    fn streams(&self) -> &'static [StreamType] {
        &[]
    }
    fn apply(&self, _: &EventEnvelope, _: &mut dyn DocTx) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Who owns what: a projection's name, collections and indexes lead to its live store.
struct Routes {
    /// Live store per projection name.
    live: HashMap<&'static str, Arc<dyn ReadModelStore>>,
    collections: HashMap<&'static str, &'static str>,
    indexes: HashMap<&'static str, &'static str>,
}

/// The read-model store of a process with blue/green generations; see the module docs.
///
/// A collection or index that no projection declares is an error, not a guess: a read that
/// went to the wrong generation would answer wrongly without a sign.
pub struct GenerationRouter {
    routes: RwLock<Routes>,
}

impl GenerationRouter {
    /// Routes every projection of `projections` to its live store, `live(name)`.
    pub fn new(
        projections: &[Arc<dyn Projection>],
        live: impl Fn(&'static str) -> Arc<dyn ReadModelStore>,
    ) -> Self {
        let mut routes = Routes {
            live: HashMap::new(),
            collections: HashMap::new(),
            indexes: HashMap::new(),
        };
        for p in projections {
            routes.live.insert(p.name(), live(p.name()));
            for c in p.collections() {
                routes.collections.insert(c, p.name());
            }
            for i in p.indexes() {
                routes.indexes.insert(i, p.name());
            }
        }
        Self {
            routes: RwLock::new(routes),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        // Plain data; a panicking writer cannot leave it half-changed (one insert).
        self.routes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The live store of `projection`.
    pub fn live(&self, projection: &str) -> Result<Arc<dyn ReadModelStore>, ReadModelError> {
        self.read()
            .live
            .get(projection)
            .cloned()
            .ok_or_else(|| unrouted("projection", projection))
    }

    /// Makes `store` the live store of `projection`: every call that starts from now on uses it.
    pub fn switch(&self, projection: &'static str, store: Arc<dyn ReadModelStore>) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .insert(projection, store);
    }

    fn owner(&self, kind: &str, name: &str) -> Result<Arc<dyn ReadModelStore>, ReadModelError> {
        let routes = self.read();
        let owners = if kind == "collection" {
            &routes.collections
        } else {
            &routes.indexes
        };
        owners
            .get(name)
            .and_then(|p| routes.live.get(p))
            .cloned()
            .ok_or_else(|| unrouted(kind, name))
    }

    /// Every distinct live store.
    fn stores(&self) -> Vec<Arc<dyn ReadModelStore>> {
        let mut stores: Vec<Arc<dyn ReadModelStore>> = Vec::new();
        for s in self.read().live.values() {
            if !stores.iter().any(|seen| Arc::ptr_eq(seen, s)) {
                stores.push(s.clone());
            }
        }
        stores
    }
}

fn unrouted(kind: &str, name: &str) -> ReadModelError {
    corrupt(
        name,
        "",
        format!("no projection declares the {kind} {name:?}"),
    )
}

#[async_trait]
impl ReadModelStore for GenerationRouter {
    async fn apply_batch(&self, batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        let store = self.live(batch.projection.name())?;
        store.apply_batch(batch).await
    }

    async fn checkpoint(&self, projection: &str) -> ReadModelResult<FeedCursor> {
        self.live(projection)?.checkpoint(projection).await
    }

    async fn last_applied(&self, projection: &str, stream: &StreamRef) -> ReadModelResult<u64> {
        let store = self.live(projection)?;
        store.last_applied(projection, stream).await
    }

    async fn get(&self, collection: &str, key: &str) -> ReadModelResult<Option<Value>> {
        self.owner("collection", collection)?
            .get(collection, key)
            .await
    }

    async fn query(&self, query: Query<'_>) -> ReadModelResult<Vec<Value>> {
        self.owner("index", query.index)?.query(query).await
    }

    async fn put_doc(&self, at: DocKey<'_>, doc: EncodedDoc) -> ReadModelResult<()> {
        let store = self.owner("collection", at.collection)?;
        store.put_doc(at, doc).await
    }

    async fn reset(&self, projection: &dyn Projection) -> ReadModelResult<()> {
        self.live(projection.name())?.reset(projection).await
    }

    async fn purge(&self) -> ReadModelResult<()> {
        for store in self.stores() {
            store.purge().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogProjection, ALL, PRODUCTS};
    use crate::MemoryReadModelStore;
    use serde_json::json;

    async fn store_with(name: &str) -> Arc<dyn ReadModelStore> {
        let store = MemoryReadModelStore::new();
        let doc = EncodedDoc::from_json(
            &json!({ "name": name }),
            vec![IndexEntry::new(ALL, "all", "p1")],
        );
        store
            .put_doc(DocKey::new(PRODUCTS, "p1"), doc)
            .await
            .expect("put");
        Arc::new(store)
    }

    async fn read(router: &GenerationRouter) -> serde_json::Value {
        let doc = router.get(PRODUCTS, "p1").await.expect("get").expect("doc");
        let listed = router
            .query(Query::new(ALL, "all", 10))
            .await
            .expect("query");
        assert_eq!(listed, vec![doc.clone()]);
        doc["name"].clone()
    }

    #[tokio::test]
    async fn reads_go_to_the_live_generation_of_the_owner_and_switch_at_once() {
        let (blue, green) = (store_with("blue").await, store_with("green").await);
        let projections: Vec<Arc<dyn Projection>> = vec![Arc::new(CatalogProjection)];
        let router = GenerationRouter::new(&projections, |_| blue.clone());
        assert_eq!(read(&router).await, "blue");
        router.switch("catalog", green.clone());
        assert_eq!(read(&router).await, "green");
        assert!(Arc::ptr_eq(&router.live("catalog").unwrap(), &green));
    }

    #[test]
    fn a_generations_prefix_comes_off_and_nothing_else_does() {
        assert_eq!(
            base_name(&format!("{}support_by_date", generation_prefix(12))),
            "support_by_date"
        );
        assert_eq!(base_name("support_by_date"), "support_by_date");
        assert_eq!(base_name("g~x"), "g~x");
        assert_eq!(base_name("gx~y"), "gx~y");
        assert_eq!(base_name("general~x"), "general~x");
    }

    #[tokio::test]
    async fn what_no_projection_declares_is_an_error_not_a_guess() {
        let store = store_with("blue").await;
        let projections: Vec<Arc<dyn Projection>> = vec![Arc::new(CatalogProjection)];
        let router = GenerationRouter::new(&projections, |_| store.clone());
        assert!(router.get("somebody_elses", "k").await.is_err());
        assert!(router
            .query(Query::new("no_such_index", "p", 1))
            .await
            .is_err());
        assert!(router.checkpoint("support").await.is_err());
    }
}
