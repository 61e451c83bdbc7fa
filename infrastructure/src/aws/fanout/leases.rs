//! [`DynamoShardLeases`]: the relays' shard leases and heartbeats, items of the stage's relay
//! table beside the checkpoints:
//!
//! | `id` | attributes |
//! |---|---|
//! | `lease#<shard id>` | `owner` S, `expires` N (Unix milliseconds) |
//! | `relay#<owner>` | `expires` N: the relay is alive until then |
//!
//! A lease is taken with a conditional put (no lease, ours, or expired), so two relays never
//! both hold one; the relays' clocks must agree to well within a lease's time (NTP does).

use super::fanout_error;
use crate::aws::error::classify;
use crate::aws::metrics::RequestCounters;
use crate::aws::{ResourceNames, RetryPolicy};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commands::{FanoutError, ShardLeases};
use std::collections::HashMap;
use std::time::Duration;

/// Leases in the relay table.
#[derive(Debug)]
pub struct DynamoShardLeases {
    client: Client,
    table: String,
    retry: RetryPolicy,
    counters: RequestCounters,
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn until(ttl: Duration) -> AttributeValue {
    let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    AttributeValue::N(now_millis().saturating_add(ttl).to_string())
}

impl DynamoShardLeases {
    pub fn new(client: Client, names: &ResourceNames, retry: RetryPolicy) -> Self {
        Self {
            client,
            table: names.relay_table.clone(),
            retry,
            counters: RequestCounters::default(),
        }
    }
}

#[async_trait]
impl ShardLeases for DynamoShardLeases {
    #[tracing::instrument(skip_all, fields(%shard, %owner), err(Display))]
    async fn acquire(&self, shard: &str, owner: &str, ttl: Duration) -> Result<bool, FanoutError> {
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(format!("lease#{shard}"))),
            ("owner".to_owned(), AttributeValue::S(owner.to_owned())),
            ("expires".to_owned(), until(ttl)),
        ]);
        let written = self
            .retry
            .send("PutItem", || {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .condition_expression(
                        "attribute_not_exists(id) OR #owner = :me OR #expires < :now",
                    )
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_names("#expires", "expires")
                    .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
                    .expression_attribute_values(
                        ":now",
                        AttributeValue::N(now_millis().to_string()),
                    )
                    .send()
            })
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.is("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(fanout_error(e)),
        }
    }

    #[tracing::instrument(skip_all, fields(%shard, %owner), err(Display))]
    async fn release(&self, shard: &str, owner: &str) -> Result<(), FanoutError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(format!("lease#{shard}")))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Somebody else's now (or nobody's): nothing to free.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(fanout_error(classify("DeleteItem", &e))),
        }
    }

    #[tracing::instrument(skip_all, fields(%owner), err(Display))]
    async fn heartbeat(&self, owner: &str, ttl: Duration) -> Result<usize, FanoutError> {
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(format!("relay#{owner}"))),
            ("expires".to_owned(), until(ttl)),
        ]);
        self.retry
            .send("PutItem", || {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .send()
            })
            .await
            .map_err(fanout_error)?;
        let filter = crate::aws::ddb::Filter {
            expression: "begins_with(id, :relay) AND #expires > :now".into(),
            names: HashMap::from([("#expires".to_owned(), "expires".to_owned())]),
            values: HashMap::from([
                (":relay".to_owned(), AttributeValue::S("relay#".into())),
                (
                    ":now".to_owned(),
                    AttributeValue::N(now_millis().to_string()),
                ),
            ]),
        };
        let alive = self
            .retry
            .retry("Scan", |_| {
                crate::aws::ddb::scan_all(&self.client, &self.counters, &self.table, Some(&filter))
            })
            .await
            .map_err(fanout_error)?;
        Ok(alive.len().max(1))
    }
}
