//! [`SqsEventQueue`]: one consumer group's SQS queue as an [`EventQueue`].

use super::envelope::decode_message;
use super::{fanout_error, send};
use crate::aws::ddb::built;
use crate::aws::RetryPolicy;
use async_trait::async_trait;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use commands::{EventQueue, FanoutError, QueuedEvent, Receive};
use std::time::Duration;

/// SQS's longest long poll.
const MAX_WAIT_SECS: u64 = 20;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;

/// A queue by URL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsEventQueue {
    client: Client,
    url: String,
    retry: RetryPolicy,
}

fn secs(d: Duration, max: u64) -> i32 {
    // Bounded by `max`, which fits an i32.
    i32::try_from(d.as_secs().min(max)).unwrap_or(i32::MAX)
}

impl SqsEventQueue {
    pub fn new(client: Client, url: impl Into<String>, retry: RetryPolicy) -> Self {
        Self {
            client,
            url: url.into(),
            retry,
        }
    }

    /// Looks the queue up by name (GetQueueUrl).
    pub async fn connect(
        client: Client,
        name: &str,
        retry: RetryPolicy,
    ) -> Result<Self, FanoutError> {
        let url = send(&retry, "GetQueueUrl", || {
            client.get_queue_url().queue_name(name).send()
        })
        .await?
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| FanoutError::Permanent(format!("queue {name} has no url")))?;
        Ok(Self::new(client, url, retry))
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl EventQueue for SqsEventQueue {
    #[tracing::instrument(skip_all, fields(queue = %self.url, max, received), err(Display))]
    async fn receive(&self, request: Receive) -> Result<Vec<QueuedEvent>, FanoutError> {
        let Receive {
            max,
            wait,
            visibility,
        } = request;
        let max = i32::try_from(max.clamp(1, 10)).unwrap_or(10);
        let out = send(&self.retry, "ReceiveMessage", || {
            self.client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(max)
                .wait_time_seconds(secs(wait, MAX_WAIT_SECS))
                .set_visibility_timeout(visibility.map(|v| secs(v, MAX_VISIBILITY_SECS)))
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
        })
        .await?;
        let mut received = Vec::new();
        for m in out.messages() {
            let Some(receipt) = m.receipt_handle() else {
                tracing::warn!(message_id = ?m.message_id(), "received a message without a receipt handle");
                continue;
            };
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            received.push(QueuedEvent {
                receipt: receipt.to_owned(),
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receive_count,
                event: m
                    .body()
                    .ok_or_else(|| "message has no body".to_owned())
                    .and_then(decode_message),
            });
        }
        tracing::Span::current().record("received", received.len());
        Ok(received)
    }

    #[tracing::instrument(skip_all, fields(queue = %self.url, count = receipts.len()), err(Display))]
    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, FanoutError> {
        let mut kept = Vec::new();
        for chunk in receipts.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, receipt) in chunk.iter().enumerate() {
                let entry = DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build();
                entries.push(built(entry).map_err(fanout_error)?);
            }
            let out = send(&self.retry, "DeleteMessageBatch", || {
                self.client
                    .delete_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries.clone()))
                    .send()
            })
            .await?;
            for failed in out.failed() {
                tracing::warn!(code = failed.code(), message = ?failed.message(), "message not deleted");
                if let Some(receipt) = failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                {
                    kept.push(receipt.clone());
                }
            }
        }
        Ok(kept)
    }

    #[tracing::instrument(skip_all, fields(queue = %self.url, timeout_s = timeout.as_secs()), err(Display))]
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), FanoutError> {
        send(&self.retry, "ChangeMessageVisibility", || {
            self.client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .visibility_timeout(secs(timeout, MAX_VISIBILITY_SECS))
                .send()
        })
        .await?;
        Ok(())
    }
}
