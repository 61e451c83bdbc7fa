//! [`DynamoShardCheckpoints`]: the relay's per-shard checkpoints, one item per shard in the
//! stage's relay table (pk `id` S, created by the template):
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `id` | S (pk) | `shard#<shard id>` (the [`ShardInfo`](commands::ShardInfo) id) |
//! | `seq` | S | the last relayed sequence number (absent before the first record) |
//! | `finished` | BOOL | the shard is closed and fully relayed |
//! | `updated_at` | S | RFC 3339, for operators |
//!
//! Every write is a compare-and-set on `seq` (see [`ShardCheckpointStore`]).

use super::fanout_error;
use crate::aws::{ResourceNames, RetryPolicy};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commands::{FanoutError, ShardCheckpoint, ShardCheckpointStore};
use std::collections::HashMap;

const ID: &str = "id";
const SEQ: &str = "seq";
const FINISHED: &str = "finished";
const UPDATED_AT: &str = "updated_at";

/// Checkpoints in the relay table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoShardCheckpoints {
    client: Client,
    table: String,
    retry: RetryPolicy,
}

fn item_id(shard: &str) -> String {
    format!("shard#{shard}")
}

impl DynamoShardCheckpoints {
    pub fn new(client: Client, names: &ResourceNames, retry: RetryPolicy) -> Self {
        Self {
            client,
            table: names.relay_table.clone(),
            retry,
        }
    }
}

#[async_trait]
impl ShardCheckpointStore for DynamoShardCheckpoints {
    #[tracing::instrument(skip_all, fields(%shard), err(Display))]
    async fn load(&self, shard: &str) -> Result<Option<ShardCheckpoint>, FanoutError> {
        let out = self
            .retry
            .send("GetItem", || {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .key(ID, AttributeValue::S(item_id(shard)))
                    .consistent_read(true)
                    .send()
            })
            .await
            .map_err(fanout_error)?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let sequence = match item.get(SEQ) {
            None => None,
            Some(AttributeValue::S(s)) => Some(s.clone()),
            Some(other) => {
                return Err(FanoutError::Permanent(format!(
                    "checkpoint of shard {shard} has a malformed seq {other:?}"
                )))
            }
        };
        let finished = matches!(item.get(FINISHED), Some(AttributeValue::Bool(true)));
        Ok(Some(ShardCheckpoint { sequence, finished }))
    }

    #[tracing::instrument(skip_all, fields(%shard, seq = ?next.sequence, finished = next.finished), err(Display))]
    async fn save(
        &self,
        shard: &str,
        previous: Option<&ShardCheckpoint>,
        next: &ShardCheckpoint,
    ) -> Result<(), FanoutError> {
        let mut item = HashMap::from([
            (ID.to_owned(), AttributeValue::S(item_id(shard))),
            (FINISHED.to_owned(), AttributeValue::Bool(next.finished)),
            (
                UPDATED_AT.to_owned(),
                AttributeValue::S(chrono::Utc::now().to_rfc3339()),
            ),
        ]);
        if let Some(seq) = &next.sequence {
            item.insert(SEQ.to_owned(), AttributeValue::S(seq.clone()));
        }
        let (condition, values) = match previous.map(|p| p.sequence.as_ref()) {
            None => ("attribute_not_exists(#id)", None),
            Some(None) => ("attribute_exists(#id) AND attribute_not_exists(#seq)", None),
            Some(Some(seq)) => (
                "#seq = :prev",
                Some(HashMap::from([(
                    ":prev".to_owned(),
                    AttributeValue::S(seq.clone()),
                )])),
            ),
        };
        // DynamoDB refuses names the expression does not use.
        let mut names = HashMap::new();
        if condition.contains("#id") {
            names.insert("#id".to_owned(), ID.to_owned());
        }
        if condition.contains("#seq") {
            names.insert("#seq".to_owned(), SEQ.to_owned());
        }
        let written = self
            .retry
            .send("PutItem", || {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names.clone()))
                    .set_expression_attribute_values(values.clone())
                    .send()
            })
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(e) if e.is("ConditionalCheckFailedException") => {
                Err(FanoutError::CheckpointConflict {
                    shard: shard.to_owned(),
                })
            }
            Err(e) => Err(fanout_error(e)),
        }
    }
}
