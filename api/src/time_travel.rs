//! Time travel for analysts: an aggregate's state folded up to a version or an instant, with the
//! events that produced it. Reads the event store directly (consistent), never a read model.

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use commands::{EventEnvelope, EventStore, StreamRef};
use domain::{Cart, EventSourced, Order, Payment, Product, StreamType};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Where to stop folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Up to and including this stream version.
    Version(u64),
    /// Every event that occurred at or before this instant.
    Time(DateTime<Utc>),
}

impl At {
    /// A bare number is a version, anything else an RFC 3339 instant.
    pub fn parse(s: &str) -> Result<At, ApiError> {
        if let Ok(v) = s.parse::<u64>() {
            return Ok(At::Version(v));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| At::Time(t.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::validation("at", "expected a stream version or an RFC 3339 time")
            })
    }
}

/// A stream as it was.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamAt {
    pub stream_type: String,
    pub stream_id: String,
    /// The version of the last event folded in (0: before the first event).
    pub version: u64,
    /// The aggregate's state at that version: the fields of the stream type's aggregate.
    #[schema(value_type = std::collections::BTreeMap<String, serde_json::Value>)]
    pub state: Value,
    /// The events folded in, oldest first.
    pub events: Vec<EventEnvelope>,
}

fn fold<A: EventSourced>(events: &[EventEnvelope]) -> Result<Value, ApiError> {
    let mut state = A::default();
    for e in events {
        let event = e
            .payload
            .decode_event::<A::Event>(&e.event_type, e.event_version)
            .map_err(|err| {
                ApiError::internal(format!("undecodable event {}: {err}", e.event_id))
            })?;
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    serde_json::to_value(&state)
        .map_err(|e| ApiError::internal(format!("cannot encode state: {e}")))
}

/// Folds `stream` up to `at` (its latest state when `None`); 404 when the stream has no events.
pub async fn stream_at(
    store: &dyn EventStore,
    stream: StreamRef,
    at: Option<At>,
) -> Result<StreamAt, ApiError> {
    let to = match at {
        Some(At::Version(v)) => v,
        _ => u64::MAX,
    };
    let mut events = store.read(&stream, 1..=to).await?;
    if let Some(At::Time(t)) = at {
        // Sequence order is occurrence order within a stream.
        let keep = events.iter().take_while(|e| e.occurred_at <= t).count();
        events.truncate(keep);
    }
    if events.is_empty() && store.read(&stream, 1..=1).await?.is_empty() {
        return Err(ApiError::not_found("stream"));
    }
    let state = match stream.stream_type {
        StreamType::Cart => fold::<Cart>(&events)?,
        StreamType::Order => fold::<Order>(&events)?,
        StreamType::Payment => fold::<Payment>(&events)?,
        StreamType::Product => fold::<Product>(&events)?,
        StreamType::Notification => fold::<domain::Notification>(&events)?,
        StreamType::Customer => fold::<domain::Customer>(&events)?,
    };
    Ok(StreamAt {
        stream_type: stream.stream_type.as_str().to_string(),
        stream_id: stream.stream_id,
        version: events.last().map(|e| e.sequence).unwrap_or(0),
        state,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_a_version_or_a_time() {
        assert_eq!(At::parse("3").unwrap(), At::Version(3));
        assert!(matches!(
            At::parse("2026-01-02T03:04:05Z").unwrap(),
            At::Time(_)
        ));
        assert_eq!(At::parse("yesterday").unwrap_err().status, 400);
    }
}
