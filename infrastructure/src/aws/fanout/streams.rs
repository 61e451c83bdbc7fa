//! [`DynamoStreamSource`]: the events table's DynamoDB Stream as a [`ChangeSource`].
//!
//! Shards are listed with ListStreams (every stream of the table, paged) and DescribeStream
//! (every shard, paged); a shard's id is `<stream arn>|<shard id>`, its parent the parent shard
//! of the same stream. A cursor is a shard iterator (GetShardIterator `AFTER_SEQUENCE_NUMBER`
//! the checkpoint, or `TRIM_HORIZON` without one) and GetRecords reads from it.
//!
//! Records are decoded from their NEW_IMAGE with the event store's own item codec
//! ([`crate::aws::codec::decode_event`]). Only INSERTs of event items are events (the store
//! never updates or deletes an event item); other records, the snapshot items' writes among
//! them, come back with no event.
//!
//! **Emulator compatibility** ([`StreamsOptions::emulator_compat`]). moto 5.2.5 differs from
//! DynamoDB in two ways that matter here, both caused by how it rolls back a failed
//! TransactWriteItems (it swaps every table of the transaction for a deep copy taken before it
//! started):
//!
//! 1. an iterator keeps pointing at the replaced copy's stream shard, so after any failed
//!    transaction on the events table (every Conflict or Duplicate) it never sees a new record
//!    again: the cursor is therefore the position itself, and every read opens a fresh iterator
//!    after it;
//! 2. the replaced shard still holds the stream records the failed transaction wrote before it
//!    failed, records of events that do not exist: every record is therefore checked against the
//!    table (one consistent BatchGetItem per page), and a page is cut before the first record
//!    whose event is not there, to be read again (from the live shard) next time.
//!
//! Neither happens on DynamoDB, where the option stays off.

use super::{fanout_error, send};
use crate::aws::codec::{decode_event, is_snapshot, n, s};
use crate::aws::ddb::{built, Rounds};
use crate::aws::{ResourceNames, RetryPolicy};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodbstreams::types::{OperationType, Record, ShardIteratorType};
use commands::{ChangeRecord, ChangeSource, FanoutError, ShardCursor, ShardInfo, ShardPage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Options of [`DynamoStreamSource`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamsOptions {
    /// Work around the local emulator's stream quirks (see the module docs). Off on AWS.
    pub emulator_compat: bool,
}

/// The DynamoDB Stream of the events table.
#[derive(Debug, Clone)]
pub struct DynamoStreamSource {
    streams: aws_sdk_dynamodbstreams::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    options: StreamsOptions,
    retry: RetryPolicy,
}

/// The opaque cursor, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Cursor {
    /// A shard iterator (DynamoDB).
    Iterator { shard: String, iterator: String },
    /// A position, opened afresh by every read (emulator compatibility).
    After {
        shard: String,
        after: Option<String>,
    },
}

impl Cursor {
    fn encode(&self) -> Result<ShardCursor, FanoutError> {
        serde_json::to_string(self)
            .map(ShardCursor)
            .map_err(|e| FanoutError::Permanent(format!("cannot encode a shard cursor: {e}")))
    }

    fn decode(cursor: &ShardCursor) -> Result<Self, FanoutError> {
        serde_json::from_str(&cursor.0)
            .map_err(|e| FanoutError::Permanent(format!("not a shard cursor of this source: {e}")))
    }
}

fn shard_key(stream_arn: &str, shard_id: &str) -> String {
    format!("{stream_arn}|{shard_id}")
}

fn split_key(shard: &str) -> Result<(&str, &str), FanoutError> {
    shard
        .rsplit_once('|')
        .ok_or_else(|| FanoutError::Permanent(format!("malformed shard id {shard}")))
}

fn to_records(records: &[Record]) -> Result<Vec<ChangeRecord>, FanoutError> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(data) = r.dynamodb() else {
            return Err(FanoutError::Permanent("stream record without data".into()));
        };
        let Some(sequence_number) = data.sequence_number() else {
            return Err(FanoutError::Permanent(
                "stream record without a sequence number".into(),
            ));
        };
        let event = if r.event_name() == Some(&OperationType::Insert) {
            let Some(image) = data.new_image() else {
                return Err(FanoutError::Permanent(format!(
                    "insert record {sequence_number} has no new image (the stream must be NEW_IMAGE)"
                )));
            };
            if is_snapshot(image) {
                None
            } else {
                Some(decode_event(image).map_err(|e| {
                    FanoutError::Permanent(format!(
                        "stream record {sequence_number} is not an event: {e}"
                    ))
                })?)
            }
        } else {
            tracing::debug!(sequence_number, event_name = ?r.event_name(), "stream record is not an insert");
            None
        };
        out.push(ChangeRecord {
            sequence_number: sequence_number.to_owned(),
            event,
        });
    }
    Ok(out)
}

impl DynamoStreamSource {
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        names: &ResourceNames,
        options: StreamsOptions,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            streams,
            dynamodb,
            table: names.events_table.clone(),
            options,
            retry,
        }
    }

    async fn stream_arns(&self) -> Result<Vec<String>, FanoutError> {
        let mut arns = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = send(&self.retry, "ListStreams", || {
                self.streams
                    .list_streams()
                    .table_name(&self.table)
                    .set_exclusive_start_stream_arn(start.clone())
                    .send()
            })
            .await?;
            arns.extend(
                out.streams()
                    .iter()
                    .filter_map(|s| s.stream_arn().map(str::to_owned)),
            );
            match out.last_evaluated_stream_arn() {
                Some(last) if start.as_deref() != Some(last) => start = Some(last.to_owned()),
                _ => break,
            }
        }
        Ok(arns)
    }

    async fn stream_shards(&self, arn: &str) -> Result<Vec<ShardInfo>, FanoutError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = send(&self.retry, "DescribeStream", || {
                self.streams
                    .describe_stream()
                    .stream_arn(arn)
                    .set_exclusive_start_shard_id(start.clone())
                    .send()
            })
            .await?;
            let Some(description) = out.stream_description() else {
                break;
            };
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                shards.push(ShardInfo {
                    id: shard_key(arn, id),
                    parent: shard.parent_shard_id().map(|p| shard_key(arn, p)),
                });
            }
            match description.last_evaluated_shard_id() {
                Some(last) if start.as_deref() != Some(last) => start = Some(last.to_owned()),
                _ => break,
            }
        }
        Ok(shards)
    }

    /// A fresh iterator after `after` (at the oldest record without one). A checkpoint older
    /// than the stream's retention cannot be resumed: the records in between are gone from the
    /// stream, which is logged loudly, and reading resumes at the oldest record still kept.
    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, FanoutError> {
        let (arn, shard_id) = split_key(shard)?;
        let get = |after: Option<&str>| {
            let request = self
                .streams
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(shard_id)
                .shard_iterator_type(if after.is_some() {
                    ShardIteratorType::AfterSequenceNumber
                } else {
                    ShardIteratorType::TrimHorizon
                })
                .set_sequence_number(after.map(str::to_owned));
            self.retry
                .send("GetShardIterator", move || request.clone().send())
        };
        let out = match get(after).await {
            Err(f) if after.is_some() && f.is("TrimmedDataAccessException") => {
                tracing::error!(shard, after, "relay checkpoint is older than the stream retention; records after it were never relayed and are gone from the stream, resuming at the oldest record");
                get(None).await
            }
            other => other,
        }
        .map_err(fanout_error)?;
        out.shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| FanoutError::Permanent(format!("no iterator for shard {shard}")))
    }

    async fn get_records(
        &self,
        iterator: &str,
        limit: usize,
    ) -> Result<aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput, FanoutError>
    {
        let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        self.retry
            .send("GetRecords", || {
                self.streams
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(limit)
                    .send()
            })
            .await
            .map_err(|f| match f.code.as_deref() {
                Some("ExpiredIteratorException" | "TrimmedDataAccessException") => {
                    FanoutError::CursorExpired(f.to_string())
                }
                _ => fanout_error(f),
            })
    }

    /// Cuts `records` before the first event that is not in the events table (emulator
    /// compatibility, see the module docs). Returns whether anything was cut.
    async fn verify(&self, records: &mut Vec<ChangeRecord>) -> Result<bool, FanoutError> {
        let keys: Vec<(String, u64)> = records
            .iter()
            .filter_map(|r| r.event.as_ref())
            .map(|e| (e.stream().key(), e.sequence))
            .collect();
        let mut stored: HashMap<(String, u64), String> = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut request_keys = Vec::with_capacity(chunk.len());
            for (stream, seq) in chunk {
                request_keys.push(HashMap::from([
                    (crate::aws::codec::STREAM.to_owned(), s(stream.clone())),
                    (crate::aws::codec::SEQ.to_owned(), n(*seq)),
                ]));
            }
            let request = built(
                KeysAndAttributes::builder()
                    .set_keys(Some(request_keys))
                    .consistent_read(true)
                    .projection_expression("#s, #q, #e")
                    .expression_attribute_names("#s", crate::aws::codec::STREAM)
                    .expression_attribute_names("#q", crate::aws::codec::SEQ)
                    .expression_attribute_names("#e", crate::aws::codec::EVENT_ID)
                    .build(),
            )
            .map_err(fanout_error)?;
            let mut pending = Some(request);
            let mut rounds = Rounds::new("BatchGetItem");
            while let Some(request) = pending.take() {
                rounds.next().await.map_err(fanout_error)?;
                let out = send(&self.retry, "BatchGetItem", || {
                    self.dynamodb
                        .batch_get_item()
                        .request_items(&self.table, request.clone())
                        .send()
                })
                .await?;
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    for item in items {
                        let (
                            Some(AttributeValue::S(stream)),
                            Some(AttributeValue::N(seq)),
                            Some(AttributeValue::S(id)),
                        ) = (
                            item.get(crate::aws::codec::STREAM),
                            item.get(crate::aws::codec::SEQ),
                            item.get(crate::aws::codec::EVENT_ID),
                        )
                        else {
                            continue;
                        };
                        if let Ok(seq) = seq.parse() {
                            stored.insert((stream.clone(), seq), id.clone());
                        }
                    }
                }
                pending = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
            }
        }
        let cut = records.iter().position(|r| match &r.event {
            None => false,
            Some(e) => stored.get(&(e.stream().key(), e.sequence)) != Some(&e.event_id.to_string()),
        });
        match cut {
            None => Ok(false),
            Some(i) => {
                tracing::warn!(
                    sequence_number = %records[i].sequence_number,
                    dropped = records.len() - i,
                    "stream record of an event that is not in the table (emulator rollback), reading again"
                );
                records.truncate(i);
                Ok(true)
            }
        }
    }
}

#[async_trait]
impl ChangeSource for DynamoStreamSource {
    #[tracing::instrument(skip_all, fields(table = %self.table), err(Display))]
    async fn shards(&self) -> Result<Vec<ShardInfo>, FanoutError> {
        let mut shards = Vec::new();
        for arn in self.stream_arns().await? {
            shards.extend(self.stream_shards(&arn).await?);
        }
        Ok(shards)
    }

    #[tracing::instrument(skip_all, fields(%shard, after), err(Display))]
    async fn open(&self, shard: &str, after: Option<&str>) -> Result<ShardCursor, FanoutError> {
        if self.options.emulator_compat {
            split_key(shard)?;
            return Cursor::After {
                shard: shard.to_owned(),
                after: after.map(str::to_owned),
            }
            .encode();
        }
        let iterator = self.iterator(shard, after).await?;
        Cursor::Iterator {
            shard: shard.to_owned(),
            iterator,
        }
        .encode()
    }

    #[tracing::instrument(skip_all, fields(limit, records), err(Display))]
    async fn read(&self, cursor: &ShardCursor, limit: usize) -> Result<ShardPage, FanoutError> {
        let page = match Cursor::decode(cursor)? {
            Cursor::Iterator { shard, iterator } => {
                let out = self.get_records(&iterator, limit).await?;
                let records = to_records(out.records())?;
                let next = match out.next_shard_iterator() {
                    Some(next) => Some(
                        Cursor::Iterator {
                            shard,
                            iterator: next.to_owned(),
                        }
                        .encode()?,
                    ),
                    None => None,
                };
                ShardPage { records, next }
            }
            Cursor::After { shard, after } => {
                let iterator = self.iterator(&shard, after.as_deref()).await?;
                let out = self.get_records(&iterator, limit).await?;
                let mut records = to_records(out.records())?;
                let cut = self.verify(&mut records).await?;
                let closed = out.next_shard_iterator().is_none() && !cut;
                let after = records.last().map(|r| r.sequence_number.clone()).or(after);
                let next = if closed {
                    None
                } else {
                    Some(Cursor::After { shard, after }.encode()?)
                };
                ShardPage { records, next }
            }
        };
        tracing::Span::current().record("records", page.records.len());
        Ok(page)
    }
}
