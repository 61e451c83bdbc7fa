//! The AWS adapters: the DynamoDB event store, read-model store and feed indexer, the fan-out
//! from the events table's stream through EventBridge to SQS ([`fanout`]), the notification
//! channel through SES ([`ses`]), and the provisioning of the AWS deployment, which deploys
//! `cloudformation/backbone.yaml` (the one declaration of its tables, bus, rules and queues) as a
//! CloudFormation stack.
//!
//! Adapters never read the environment: the composition root builds an [`aws_config::SdkConfig`]
//! (for example with [`config_loader`], which reads the standard AWS variables such as
//! `AWS_ENDPOINT_URL` when `load` is called) and hands clients and [`ResourceNames`] in.
//!
//! Error handling lives in [`error`]: every SDK error is classified once as transient
//! (throttling, 5xx, timeouts, I/O) or permanent, and transient ones are retried with jittered
//! backoff a bounded number of times ([`RetryPolicy`]) before surfacing as `Unavailable`.

pub mod codec;
mod ddb;
pub mod dynamo_readmodel;
pub mod dynamo_store;
pub mod error;
pub mod fanout;
pub mod feed_index;
pub mod generations;
pub mod keys;
pub mod metrics;
pub mod names;
pub mod provision;
pub mod ses;

pub use dynamo_readmodel::DynamoReadModelStore;
pub use dynamo_store::{DynamoEventStore, DynamoStoreOptions};
pub use error::RetryPolicy;
pub use fanout::{
    DynamoShardCheckpoints, DynamoShardLeases, DynamoStreamSource, EventBridgePublisher,
    SqsEventQueue, StreamsOptions,
};
pub use feed_index::{FeedIndexer, FeedLayout, DEFAULT_FEED_PARTITIONS};
pub use generations::DynamoGenerations;
pub use keys::{DynamoKeyStore, KmsWrapping};
pub use metrics::{RequestCounters, RequestCounts};
pub use names::{ConsumerGroup, ResourceNames};
pub use provision::{provision, Provisioned, StackSpec};
pub use ses::SesMailer;

use aws_smithy_http_client::tls;

/// The HTTPS client every AWS SDK client of the backbone uses: hyper with rustls on the `ring`
/// crypto provider (the SDK's default would be aws-lc-rs, a C build we avoid; see the workspace
/// `Cargo.toml`). The SDK crates are compiled without a default client, so a config must get
/// this one (as [`config_loader`] does) or requests fail with "no HTTP client".
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An `aws_config` loader with the backbone's HTTP client and the latest behavior version. The
/// composition root adds what it knows (region, endpoint, credentials) and calls `load`, which
/// reads the standard AWS environment and profile files for anything left unset.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client())
}
