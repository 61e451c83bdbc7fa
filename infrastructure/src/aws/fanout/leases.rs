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

use super::{RelayTable, ID};
use crate::aws::ddb::Filter;
use crate::aws::metrics::RequestCounters;
use crate::aws::{ResourceNames, RetryPolicy};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commands::{FanoutError, ShardLeases};
use std::collections::HashMap;
use std::time::Duration;

/// Leases in the relay table.
#[derive(Debug)]
pub struct DynamoShardLeases {
    table: RelayTable,
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
            table: RelayTable::new(client, names, retry),
            counters: RequestCounters::default(),
        }
    }
}

#[async_trait]
impl ShardLeases for DynamoShardLeases {
    #[tracing::instrument(skip_all, fields(%shard, %owner), err(Display))]
    async fn acquire(&self, shard: &str, owner: &str, ttl: Duration) -> Result<bool, FanoutError> {
        let item = HashMap::from([
            (ID.to_owned(), AttributeValue::S(format!("lease#{shard}"))),
            ("owner".to_owned(), AttributeValue::S(owner.to_owned())),
            ("expires".to_owned(), until(ttl)),
        ]);
        let condition = Filter {
            expression: "attribute_not_exists(id) OR #owner = :me OR #expires < :now".into(),
            names: HashMap::from([
                ("#owner".to_owned(), "owner".to_owned()),
                ("#expires".to_owned(), "expires".to_owned()),
            ]),
            values: HashMap::from([
                (":me".to_owned(), AttributeValue::S(owner.to_owned())),
                (
                    ":now".to_owned(),
                    AttributeValue::N(now_millis().to_string()),
                ),
            ]),
        };
        self.table.put(item, Some(&condition)).await
    }

    #[tracing::instrument(skip_all, fields(%shard, %owner), err(Display))]
    async fn release(&self, shard: &str, owner: &str) -> Result<(), FanoutError> {
        let mine = Filter {
            expression: "#owner = :me".into(),
            names: HashMap::from([("#owner".to_owned(), "owner".to_owned())]),
            values: HashMap::from([(":me".to_owned(), AttributeValue::S(owner.to_owned()))]),
        };
        // Not deleted: somebody else's now (or nobody's), so nothing to free.
        self.table
            .delete_if(format!("lease#{shard}"), &mine)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(%owner), err(Display))]
    async fn heartbeat(&self, owner: &str, ttl: Duration) -> Result<usize, FanoutError> {
        let item = HashMap::from([
            (ID.to_owned(), AttributeValue::S(format!("relay#{owner}"))),
            ("expires".to_owned(), until(ttl)),
        ]);
        self.table.put(item, None).await?;
        let filter = Filter {
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
        let alive = self.table.scan(&self.counters, &filter).await?;
        Ok(alive.len().max(1))
    }
}
