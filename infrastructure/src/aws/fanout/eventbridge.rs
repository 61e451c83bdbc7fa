//! [`EventBridgePublisher`]: PutEvents on the stage's bus.

use super::envelope::source_of;
use super::{fanout_error, send};
use crate::aws::error::AwsFailure;
use crate::aws::RetryPolicy;
use async_trait::async_trait;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use commands::{EventEnvelope, EventPublisher, FanoutError, PublishFailure, MAX_PUBLISH_BATCH};

/// Entry error codes worth sending again.
const TRANSIENT_ENTRY_CODES: &[&str] = &[
    "InternalFailure",
    "InternalException",
    "ThrottlingException",
    "ServiceUnavailable",
];

/// Puts events on one bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: Client,
    bus: String,
    retry: RetryPolicy,
}

impl EventBridgePublisher {
    pub fn new(client: Client, bus: impl Into<String>, retry: RetryPolicy) -> Self {
        Self {
            client,
            bus: bus.into(),
            retry,
        }
    }

    fn entry(&self, event: &EventEnvelope) -> Result<PutEventsRequestEntry, FanoutError> {
        let detail = serde_json::to_string(event).map_err(|e| {
            FanoutError::Permanent(format!("cannot encode event {}: {e}", event.event_id))
        })?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(source_of(event))
            .detail_type(&event.event_type)
            .detail(detail)
            .time(DateTime::from_millis(event.occurred_at.timestamp_millis()))
            .build())
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    #[tracing::instrument(skip_all, fields(bus = %self.bus, entries = events.len()), err(Display))]
    async fn publish(&self, events: &[EventEnvelope]) -> Result<Vec<PublishFailure>, FanoutError> {
        if events.len() > MAX_PUBLISH_BATCH {
            return Err(FanoutError::Permanent(format!(
                "a publish batch holds at most {MAX_PUBLISH_BATCH} events, got {}",
                events.len()
            )));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let entries = events
            .iter()
            .map(|e| self.entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        let out = send(&self.retry, "PutEvents", || {
            self.client
                .put_events()
                .set_entries(Some(entries.clone()))
                .send()
        })
        .await?;
        if out.failed_entry_count() == 0 {
            return Ok(Vec::new());
        }
        let results = out.entries();
        if results.len() != events.len() {
            // Without a per-entry answer nothing can be assumed accepted.
            return Err(fanout_error(AwsFailure::new(
                "PutEvents",
                true,
                format!(
                    "{} failed entries but {} results for {} entries",
                    out.failed_entry_count(),
                    results.len(),
                    events.len()
                ),
            )));
        }
        Ok(results
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                r.error_code().map(|code| PublishFailure {
                    index,
                    code: Some(code.to_owned()),
                    message: r.error_message().unwrap_or_default().to_owned(),
                    transient: TRANSIENT_ENTRY_CODES.contains(&code),
                })
            })
            .collect())
    }
}
