//! The AWS adapters of the fan-out ports ([`commands::fanout`]):
//!
//! - [`DynamoStreamSource`]: the events table's DynamoDB Stream as a [`ChangeSource`]
//!   (ListStreams, DescribeStream, GetShardIterator, GetRecords);
//! - [`DynamoShardCheckpoints`]: the relay's per-shard checkpoints in the relay table;
//! - [`DynamoShardLeases`]: which relay relays which shard, in the same table;
//! - [`EventBridgePublisher`]: PutEvents on the stage's bus, source `backbone.<stream_type>`,
//!   detail-type = event type, detail = the envelope;
//! - [`SqsEventQueue`]: one consumer group's SQS queue, decoding the EventBridge envelope;
//! - the [`FeedWriter`] impl of the event store's [`FeedIndexer`].
//!
//! Like every adapter, these take clients and names from the composition root and never read
//! the environment. SDK errors are classified once ([`super::error::classify`]) and
//! transient ones are retried with jittered backoff ([`RetryPolicy`]) before they surface as
//! [`FanoutError::Transient`].
//!
//! [`ChangeSource`]: commands::ChangeSource
//! [`FanoutError::Transient`]: commands::FanoutError::Transient
//! [`RetryPolicy`]: crate::aws::RetryPolicy

pub mod checkpoints;
pub mod envelope;
pub mod eventbridge;
pub mod leases;
pub mod sqs;
pub mod streams;

pub use checkpoints::DynamoShardCheckpoints;
pub use eventbridge::EventBridgePublisher;
pub use leases::DynamoShardLeases;
pub use sqs::SqsEventQueue;
pub use streams::{DynamoStreamSource, StreamsOptions};

use crate::aws::codec::Item;
use crate::aws::ddb::Filter;
use crate::aws::error::AwsFailure;
use crate::aws::metrics::RequestCounters;
use crate::aws::{FeedIndexer, ResourceNames, RetryPolicy};
use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use commands::{EventEnvelope, FanoutError, FeedWriter, StoreError};
use std::future::Future;

/// The relay indexes the durable feed through the event store's own indexer.
#[async_trait]
impl FeedWriter for FeedIndexer {
    async fn index(&self, events: Vec<EventEnvelope>) -> Result<(), StoreError> {
        FeedIndexer::index(self, events).await
    }
}

/// The error code of a conditional write whose condition did not hold.
const CONDITIONAL_CHECK_FAILED_EXCEPTION: &str = "ConditionalCheckFailedException";

/// Whether a conditional write's condition held (`Ok(false)`: nothing was written).
fn condition_held<T>(written: Result<T, AwsFailure>) -> Result<bool, FanoutError> {
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.is(CONDITIONAL_CHECK_FAILED_EXCEPTION) => Ok(false),
        Err(e) => Err(fanout_error(e)),
    }
}

pub(crate) fn fanout_error(f: AwsFailure) -> FanoutError {
    f.into_port_error(FanoutError::Transient, FanoutError::Permanent)
}

/// [`RetryPolicy::send`], its failure turned into a [`FanoutError`].
pub(crate) async fn send<T, E, F, Fut>(
    retry: &RetryPolicy,
    operation: &'static str,
    request: F,
) -> Result<T, FanoutError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    retry.send(operation, request).await.map_err(fanout_error)
}

/// The relay table's key attribute.
pub(crate) const ID: &str = "id";

/// The stage's relay table, where the checkpoints and the leases live. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct RelayTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
    retry: RetryPolicy,
}

impl RelayTable {
    pub(crate) fn new(
        client: aws_sdk_dynamodb::Client,
        names: &ResourceNames,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            client,
            name: names.relay_table.clone(),
            retry,
        }
    }

    /// The item with `id`, read consistently.
    pub(crate) async fn get(&self, id: String) -> Result<Option<Item>, FanoutError> {
        let out = send(&self.retry, "GetItem", || {
            self.client
                .get_item()
                .table_name(&self.name)
                .key(ID, AttributeValue::S(id.clone()))
                .consistent_read(true)
                .send()
        })
        .await?;
        Ok(out.item)
    }

    /// Deletes the item with `id` if `condition` holds, retrying transient failures: `Ok(false)`
    /// when it did not and nothing was deleted.
    pub(crate) async fn delete_if(
        &self,
        id: String,
        condition: &Filter,
    ) -> Result<bool, FanoutError> {
        let deleted = self
            .retry
            .send("DeleteItem", || {
                self.client
                    .delete_item()
                    .table_name(&self.name)
                    .key(ID, AttributeValue::S(id.clone()))
                    .condition_expression(&condition.expression)
                    .set_expression_attribute_names(Some(condition.names.clone()))
                    .set_expression_attribute_values(condition.values_if_any())
                    .send()
            })
            .await;
        condition_held(deleted)
    }

    /// Every item `filter` keeps (a consistent Scan of every page), retrying transient failures.
    pub(crate) async fn scan(
        &self,
        counters: &RequestCounters,
        filter: &Filter,
    ) -> Result<Vec<Item>, FanoutError> {
        self.retry
            .retry("Scan", |_| {
                crate::aws::ddb::scan_all(&self.client, counters, &self.name, Some(filter))
            })
            .await
            .map_err(fanout_error)
    }

    /// Puts `item`, retrying transient failures. With a `condition` the put is a compare-and-set:
    /// `Ok(false)` when the condition did not hold and nothing was written.
    pub(crate) async fn put(
        &self,
        item: Item,
        condition: Option<&Filter>,
    ) -> Result<bool, FanoutError> {
        let written = self
            .retry
            .send("PutItem", || {
                let put = self
                    .client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item.clone()));
                match condition {
                    None => put,
                    Some(c) => put
                        .condition_expression(&c.expression)
                        .set_expression_attribute_names(Some(c.names.clone()))
                        .set_expression_attribute_values(c.values_if_any()),
                }
                .send()
            })
            .await;
        condition_held(written)
    }
}
