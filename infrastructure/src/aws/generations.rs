//! Blue/green read models on DynamoDB ([`projections::generations`]): a generation of a
//! projection is a [`Namespaced`] part of the stage's read-model tables (generation 0 unprefixed,
//! as the tables were before generations), and the read-model state table holds, per
//! projection:
//!
//! | `id` | attributes |
//! |---|---|
//! | `generation#<projection>` | `generation` N, `version` N: the live generation (absent: 0) |
//! | `generations#<projection>` | `issued` N: the last generation number handed out |
//!
//! A new generation's number comes from an atomic counter, so concurrent rebuilds never share
//! one; a promotion is a conditional write of the pointer (it must still name the generation
//! the rebuild started from), so only one of two concurrent rebuilds can promote. Every process
//! follows the pointers: [`DynamoGenerations::refresh`] switches its router, and
//! [`DynamoGenerations::follow`] does that every [`REFRESH`]. A rebuild waits twice that long
//! after promoting before it catches up once more and drops the old generation.

use super::ddb::get_item;
use super::error::{classify, AwsFailure, RetryPolicy};
use super::metrics::RequestCounters;
use super::names::ResourceNames;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use projections::generations::{Namespaced, Prepared};
use projections::store::ReadModelResult;
use projections::{GenerationRouter, Generations, Projection, ReadModelError, ReadModelStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often every process reads the pointers.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A projection's live generation and the version that built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub generation: u64,
    pub version: u32,
}

/// The [`Generations`] of a stage's read-model tables, and the pointers that every process
/// follows.
pub struct DynamoGenerations {
    client: Client,
    table: String,
    retry: RetryPolicy,
    counters: RequestCounters,
    base: Arc<dyn ReadModelStore>,
    router: Arc<GenerationRouter>,
    projections: Vec<Arc<dyn Projection>>,
    /// What this process's router uses, per projection.
    followed: Mutex<BTreeMap<&'static str, u64>>,
    /// The live generation each prepared generation replaces (the promotion's condition).
    started_from: Mutex<HashMap<(String, u64), u64>>,
}

fn id(what: &str, projection: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(
        "id".to_owned(),
        AttributeValue::S(format!("{what}#{projection}")),
    )])
}

fn failed(what: &str, e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Unavailable(format!("{what}: {e}"))
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

impl DynamoGenerations {
    /// Generations of `projections` in the read-model tables of `names`; `base` is the store on
    /// those tables, and `router` the one this process reads through.
    pub fn new(
        client: Client,
        names: &ResourceNames,
        retry: RetryPolicy,
        base: Arc<dyn ReadModelStore>,
        router: Arc<GenerationRouter>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Self {
        Self {
            client,
            table: names.readmodel_state_table.clone(),
            retry,
            counters: RequestCounters::default(),
            base,
            router,
            projections,
            followed: Mutex::new(BTreeMap::new()),
            started_from: Mutex::new(HashMap::new()),
        }
    }

    /// The store of `generation`.
    fn store(&self, generation: u64) -> Arc<dyn ReadModelStore> {
        match generation {
            0 => self.base.clone(),
            n => Arc::new(Namespaced::new(self.base.clone(), n)),
        }
    }

    /// The live generation of `projection` as the table says now (0 at the code's version
    /// when it says nothing).
    pub async fn live(&self, projection: &dyn Projection) -> Result<Live, ReadModelError> {
        let key = id("generation", projection.name());
        let item = self
            .retry
            .retry("GetItem", |_| {
                get_item(&self.client, &self.counters, &self.table, key.clone())
            })
            .await
            .map_err(|e: AwsFailure| failed("reading a generation pointer", e))?;
        Ok(match item {
            Some(item) => Live {
                generation: number(&item, "generation").unwrap_or(0),
                version: number(&item, "version").map_or(1, |v| v as u32),
            },
            None => Live {
                generation: 0,
                version: projection.version(),
            },
        })
    }

    /// Points this process's router at every projection's live generation; returns the
    /// projections whose stored version is older than their code's.
    pub async fn refresh(&self) -> Result<Vec<&'static str>, ReadModelError> {
        let mut outdated = Vec::new();
        for p in &self.projections {
            let live = self.live(p.as_ref()).await?;
            if live.version < p.version() {
                outdated.push(p.name());
            }
            let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
            if followed.get(p.name()) != Some(&live.generation) {
                self.router.switch(p.name(), self.store(live.generation));
                if followed.insert(p.name(), live.generation).is_some() {
                    tracing::info!(
                        projection = p.name(),
                        generation = live.generation,
                        "following a promoted read model generation"
                    );
                }
            }
        }
        Ok(outdated)
    }

    /// Refreshes every [`REFRESH`] until `stop` completes.
    pub fn follow(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(REFRESH) => {}
                }
                if let Err(err) = self.refresh().await {
                    tracing::warn!(error = %err, "reading the read model generations failed");
                }
            }
        })
    }
}

#[async_trait]
impl Generations for DynamoGenerations {
    async fn prepare(&self, projection: &dyn Projection) -> ReadModelResult<Prepared> {
        let live = self.live(projection).await?.generation;
        let key = id("generations", projection.name());
        let issued = self
            .retry
            .retry("UpdateItem", |_| {
                let request = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .update_expression("ADD issued :one")
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
                    .return_values(ReturnValue::UpdatedNew);
                async move { request.send().await.map_err(|e| classify("UpdateItem", &e)) }
            })
            .await
            .map_err(|e| failed("issuing a generation", e))?;
        let issued = issued
            .attributes()
            .and_then(|a| number(a, "issued"))
            .ok_or_else(|| failed("issuing a generation", "no number returned"))?;
        // A counter that lags the pointer (a table restored from a backup) never reissues one.
        let generation = issued.max(live + 1);
        self.started_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((projection.name().to_owned(), generation), live);
        let store = self.store(generation);
        store.reset(projection).await?;
        Ok(Prepared { generation, store })
    }

    async fn promote(&self, projection: &dyn Projection, next: &Prepared) -> ReadModelResult<u64> {
        let Prepared { generation, store } = next.clone();
        let previous = self
            .started_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(projection.name().to_owned(), generation))
            .ok_or_else(|| failed("promoting", "the generation was not prepared here"))?;
        let mut item = id("generation", projection.name());
        item.insert(
            "generation".into(),
            AttributeValue::N(generation.to_string()),
        );
        item.insert(
            "version".into(),
            AttributeValue::N(projection.version().to_string()),
        );
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id) OR generation = :previous")
            .expression_attribute_values(":previous", AttributeValue::N(previous.to_string()))
            .send()
            .await;
        match written {
            Ok(_) => {}
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                // Another rebuild promoted first: this generation is nobody's.
                let _ = store.reset(projection).await;
                return Err(ReadModelError::Unavailable(format!(
                    "another rebuild of {} was promoted meanwhile",
                    projection.name()
                )));
            }
            Err(e) => return Err(failed("promoting a generation", classify("PutItem", &e))),
        }
        self.router.switch(projection.name(), store);
        self.followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(projection.name(), generation);
        Ok(previous)
    }

    fn propagation(&self) -> Duration {
        2 * REFRESH
    }

    async fn drop_replaced(
        &self,
        projection: &dyn Projection,
        generation: u64,
    ) -> ReadModelResult<()> {
        self.store(generation).reset(projection).await
    }
}
