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

use crate::store::{ApplyOutcome, IndexEntry, Projection, Query, ReadModelError, ReadModelStore};
use async_trait::async_trait;
use commands::{EventEnvelope, StreamRef};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Makes and promotes the generations of projections' read models.
#[async_trait]
pub trait Generations: Send + Sync + 'static {
    /// A new, empty generation for `projection`, beside its live one: its number and store.
    async fn prepare(
        &self,
        projection: &dyn Projection,
    ) -> Result<(u64, Arc<dyn ReadModelStore>), ReadModelError>;
    /// Makes `generation` (from [`Generations::prepare`]) the live one of `projection`, for
    /// every reader at once and durably, then drops the generation it replaces.
    async fn promote(
        &self,
        projection: &dyn Projection,
        generation: u64,
        store: Arc<dyn ReadModelStore>,
    ) -> Result<(), ReadModelError>;
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
    ReadModelError::Corrupt {
        collection: name.to_owned(),
        key: String::new(),
        reason: format!("no projection declares the {kind} {name:?}"),
    }
}

#[async_trait]
impl ReadModelStore for GenerationRouter {
    async fn apply_batch(
        &self,
        projection: Arc<dyn Projection>,
        events: Vec<EventEnvelope>,
        checkpoint: Option<u64>,
    ) -> Result<ApplyOutcome, ReadModelError> {
        let store = self.live(projection.name())?;
        store.apply_batch(projection, events, checkpoint).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, ReadModelError> {
        self.live(projection)?.checkpoint(projection).await
    }

    async fn last_applied(
        &self,
        projection: &str,
        stream: &StreamRef,
    ) -> Result<u64, ReadModelError> {
        self.live(projection)?
            .last_applied(projection, stream)
            .await
    }

    async fn get(&self, collection: &str, key: &str) -> Result<Option<Value>, ReadModelError> {
        self.owner("collection", collection)?
            .get(collection, key)
            .await
    }

    async fn query(&self, query: Query<'_>) -> Result<Vec<Value>, ReadModelError> {
        self.owner("index", query.index)?.query(query).await
    }

    async fn put_doc(
        &self,
        collection: &str,
        key: &str,
        body: Value,
        index: Vec<IndexEntry>,
    ) -> Result<(), ReadModelError> {
        self.owner("collection", collection)?
            .put_doc(collection, key, body, index)
            .await
    }

    async fn reset(&self, projection: &dyn Projection) -> Result<(), ReadModelError> {
        self.live(projection.name())?.reset(projection).await
    }

    async fn purge(&self) -> Result<(), ReadModelError> {
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
        store
            .put_doc(
                PRODUCTS,
                "p1",
                json!({ "name": name }),
                vec![IndexEntry::new(ALL, "all", "p1")],
            )
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
