//! Thin DynamoDB helpers shared by the adapters: each call counts itself in a
//! [`RequestCounters`], classifies its error once ([`classify`]), and pages where the API pages.
//! Retrying is left to callers, which know whether a call is safe to repeat.

use super::codec::Item;
use super::error::{classify, AwsFailure, RetryPolicy};
use super::metrics::{Op, RequestCounters};
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;

/// Cancellation reason codes that a retry of the same transaction may get past.
const TRANSIENT_REASONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

pub(crate) const CONDITIONAL_CHECK_FAILED: &str = "ConditionalCheckFailed";

/// A builder that misses a required field is a bug in this crate, reported as permanent.
pub(crate) fn built<T>(r: Result<T, BuildError>) -> Result<T, AwsFailure> {
    r.map_err(|e| AwsFailure::new("build request", false, e.to_string()))
}

/// Why a TransactWriteItems did not commit.
#[derive(Debug)]
pub(crate) enum TxError {
    /// Cancelled because a condition failed: the reason code of each action, in order
    /// (`None` for an action that was fine).
    ConditionFailed(Vec<Option<String>>),
    /// Anything else, classified (a cancellation whose reasons are all transient included).
    Failed(AwsFailure),
}

pub(crate) async fn transact(
    client: &Client,
    counters: &RequestCounters,
    items: Vec<TransactWriteItem>,
) -> Result<(), TxError> {
    counters.record(Op::TransactWriteItems);
    let err = match client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
    {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let reasons: Vec<Option<String>> = cancelled
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().filter(|c| *c != "None").map(str::to_owned))
            .collect();
        if reasons
            .iter()
            .flatten()
            .any(|c| c == CONDITIONAL_CHECK_FAILED)
        {
            return Err(TxError::ConditionFailed(reasons));
        }
        let transient = reasons
            .iter()
            .flatten()
            .all(|c| TRANSIENT_REASONS.contains(&c.as_str()));
        return Err(TxError::Failed(AwsFailure::new(
            "TransactWriteItems",
            transient,
            format!("transaction cancelled: {reasons:?}"),
        )));
    }
    Err(TxError::Failed(classify("TransactWriteItems", &err)))
}

/// A strongly consistent GetItem.
pub(crate) async fn get_item(
    client: &Client,
    counters: &RequestCounters,
    table: &str,
    key: Item,
) -> Result<Option<Item>, AwsFailure> {
    counters.record(Op::GetItem);
    client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map(|out| out.item)
        .map_err(|e| classify("GetItem", &e))
}

/// One Query request, described by its expression parts.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuerySpec {
    pub table: String,
    pub index: Option<String>,
    pub key_condition: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
    pub forward: bool,
    /// Stop after this many items in total (`None`: every page).
    pub limit: Option<usize>,
    /// Items per request (`None`: DynamoDB's 1 MB pages).
    pub page_size: Option<i32>,
    /// Items in the first request, when it differs from `page_size`.
    pub first_page: Option<i32>,
    /// Stop following pages once this holds for the items read so far.
    pub stop_when: Option<fn(&[Item]) -> bool>,
    /// A FilterExpression (its names and values go in `names` and `values`). DynamoDB applies
    /// it after a page's `Limit`, so `limit` counts the items that pass it.
    pub filter: Option<String>,
    /// Strongly consistent (not possible on a GSI).
    pub consistent: bool,
}

/// Runs a Query following `LastEvaluatedKey` until the pages end, `limit` items were read, or
/// `stop_when` holds.
pub(crate) async fn query_all(
    client: &Client,
    counters: &RequestCounters,
    spec: &QuerySpec,
) -> Result<Vec<Item>, AwsFailure> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let remaining = spec.limit.map(|l| l.saturating_sub(out.len()));
        if remaining == Some(0) {
            break;
        }
        let page_size = match (&start, spec.first_page) {
            (None, Some(first)) => Some(first),
            _ => spec.page_size,
        };
        let page_limit = match (remaining, page_size) {
            (Some(r), Some(p)) => Some(i32::try_from(r).unwrap_or(i32::MAX).min(p)),
            (Some(r), None) => Some(i32::try_from(r).unwrap_or(i32::MAX)),
            (None, p) => p,
        };
        counters.record(Op::Query);
        let page = client
            .query()
            .table_name(&spec.table)
            .set_index_name(spec.index.clone())
            .key_condition_expression(&spec.key_condition)
            .set_filter_expression(spec.filter.clone())
            .set_expression_attribute_names(Some(spec.names.clone()))
            .set_expression_attribute_values(Some(spec.values.clone()))
            .scan_index_forward(spec.forward)
            .consistent_read(spec.consistent)
            .set_limit(page_limit)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify("Query", &e))?;
        out.extend(page.items.unwrap_or_default());
        if spec.stop_when.is_some_and(|stop| stop(&out)) {
            break;
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    if let Some(limit) = spec.limit {
        out.truncate(limit);
    }
    Ok(out)
}

/// [`query_all`], retried as a whole on transient failures.
pub(crate) async fn query_retried(
    client: &Client,
    counters: &RequestCounters,
    retry: &RetryPolicy,
    spec: &QuerySpec,
) -> Result<Vec<Item>, AwsFailure> {
    retry
        .retry("Query", |_| query_all(client, counters, spec))
        .await
}

/// The rounds of a batch call that sends its unprocessed items again.
pub(crate) struct Rounds {
    operation: &'static str,
    count: u32,
}

impl Rounds {
    /// Batch calls give up once items stay unprocessed this many rounds.
    const MAX: u32 = 20;

    pub(crate) fn new(operation: &'static str) -> Self {
        Self {
            operation,
            count: 0,
        }
    }

    /// Starts the next round. Unprocessed items mean throttling: every round after the first
    /// pauses a little longer first, and after [`Self::MAX`] rounds this fails (transiently).
    pub(crate) async fn next(&mut self) -> Result<(), AwsFailure> {
        self.count += 1;
        if self.count > Self::MAX {
            return Err(AwsFailure::new(
                self.operation,
                true,
                format!("items stayed unprocessed after {} rounds", Self::MAX),
            ));
        }
        if self.count > 1 {
            let pause = std::time::Duration::from_millis(20 * u64::from(self.count));
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }
}

/// Strongly consistent BatchGetItem of any number of keys of one table (chunks of 100, with
/// unprocessed keys asked again). The result is in no particular order.
pub(crate) async fn batch_get(
    client: &Client,
    counters: &RequestCounters,
    table: &str,
    keys: Vec<Item>,
) -> Result<Vec<Item>, AwsFailure> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(100) {
        let mut pending = Some(built(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build(),
        )?);
        let mut rounds = Rounds::new("BatchGetItem");
        while let Some(request) = pending.take() {
            rounds.next().await?;
            counters.record(Op::BatchGetItem);
            let resp = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| classify("BatchGetItem", &e))?;
            if let Some(mut responses) = resp.responses {
                out.extend(responses.remove(table).unwrap_or_default());
            }
            pending = resp
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .filter(|k| !k.keys().is_empty());
        }
    }
    Ok(out)
}

/// Deletes items by key with BatchWriteItem (chunks of 25, unprocessed items sent again). Not
/// atomic: used only where a partial result is repaired by running the operation again.
pub(crate) async fn batch_delete(
    client: &Client,
    counters: &RequestCounters,
    table: &str,
    keys: Vec<Item>,
) -> Result<(), AwsFailure> {
    use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
    for chunk in keys.chunks(25) {
        let mut requests = Vec::with_capacity(chunk.len());
        for key in chunk {
            requests.push(
                WriteRequest::builder()
                    .delete_request(built(
                        DeleteRequest::builder().set_key(Some(key.clone())).build(),
                    )?)
                    .build(),
            );
        }
        let mut rounds = Rounds::new("BatchWriteItem");
        while !requests.is_empty() {
            rounds.next().await?;
            counters.record(Op::BatchWriteItem);
            let resp = client
                .batch_write_item()
                .request_items(table, std::mem::take(&mut requests))
                .send()
                .await
                .map_err(|e| classify("BatchWriteItem", &e))?;
            requests = resp
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
        }
    }
    Ok(())
}

/// A Scan's filter or a conditional write's condition: the expression and its attribute names
/// and values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub expression: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Filter {
    /// The values to send: none for an empty map, which DynamoDB refuses.
    pub(crate) fn values_if_any(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// Scans a whole table (every page, strongly consistent), optionally filtered.
pub(crate) async fn scan_all(
    client: &Client,
    counters: &RequestCounters,
    table: &str,
    filter: Option<&Filter>,
) -> Result<Vec<Item>, AwsFailure> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        counters.record(Op::Scan);
        let mut req = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take());
        if let Some(f) = filter {
            req = req
                .filter_expression(&f.expression)
                .set_expression_attribute_names(Some(f.names.clone()))
                .set_expression_attribute_values(f.values_if_any());
        }
        let page = req.send().await.map_err(|e| classify("Scan", &e))?;
        out.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    Ok(out)
}
