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

use crate::aws::error::AwsFailure;
use crate::aws::FeedIndexer;
use async_trait::async_trait;
use commands::{EventEnvelope, FanoutError, FeedWriter, StoreError};

/// The relay indexes the durable feed through the event store's own indexer.
#[async_trait]
impl FeedWriter for FeedIndexer {
    async fn index(&self, events: Vec<EventEnvelope>) -> Result<(), StoreError> {
        FeedIndexer::index(self, events).await
    }
}

pub(crate) fn fanout_error(f: AwsFailure) -> FanoutError {
    if f.transient {
        FanoutError::Transient(f.to_string())
    } else {
        FanoutError::Permanent(f.to_string())
    }
}
