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

use super::{RelayTable, ID};
use crate::aws::ddb::Filter;
use crate::aws::{ResourceNames, RetryPolicy};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commands::{CheckpointSave, FanoutError, ShardCheckpoint, ShardCheckpointStore};
use std::collections::HashMap;

const SEQ: &str = "seq";
const FINISHED: &str = "finished";
const UPDATED_AT: &str = "updated_at";

/// Checkpoints in the relay table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoShardCheckpoints {
    table: RelayTable,
}

fn item_id(shard: &str) -> String {
    format!("shard#{shard}")
}

impl DynamoShardCheckpoints {
    pub fn new(client: Client, names: &ResourceNames, retry: RetryPolicy) -> Self {
        Self {
            table: RelayTable::new(client, names, retry),
        }
    }
}

#[async_trait]
impl ShardCheckpointStore for DynamoShardCheckpoints {
    #[tracing::instrument(skip_all, fields(%shard), err(Display))]
    async fn load(&self, shard: &str) -> Result<Option<ShardCheckpoint>, FanoutError> {
        let Some(item) = self.table.get(item_id(shard)).await? else {
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

    #[tracing::instrument(skip_all, fields(shard = %save.shard, seq = ?save.next.sequence, finished = save.next.finished), err(Display))]
    async fn save(&self, save: CheckpointSave<'_>) -> Result<(), FanoutError> {
        let CheckpointSave {
            shard,
            previous,
            next,
        } = save;
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
        let condition = match previous.map(|p| p.sequence.as_ref()) {
            None => Filter {
                expression: "attribute_not_exists(#id)".into(),
                names: HashMap::from([("#id".to_owned(), ID.to_owned())]),
                values: HashMap::new(),
            },
            Some(None) => Filter {
                expression: "attribute_exists(#id) AND attribute_not_exists(#seq)".into(),
                names: HashMap::from([
                    ("#id".to_owned(), ID.to_owned()),
                    ("#seq".to_owned(), SEQ.to_owned()),
                ]),
                values: HashMap::new(),
            },
            Some(Some(seq)) => Filter {
                expression: "#seq = :prev".into(),
                names: HashMap::from([("#seq".to_owned(), SEQ.to_owned())]),
                values: HashMap::from([(":prev".to_owned(), AttributeValue::S(seq.clone()))]),
            },
        };
        if self.table.put(item, Some(&condition)).await? {
            Ok(())
        } else {
            Err(FanoutError::CheckpointConflict {
                shard: shard.to_owned(),
            })
        }
    }
}
