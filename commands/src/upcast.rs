//! The domain's upcaster at the envelope level: every event read from the store is decoded with
//! its aggregate's typed event (which upcasts old versions) and re-encoded at the current
//! version, so feeds, exports, replays and rebuilds all see current shapes.

use crate::store::{EventEnvelope, Upcaster};
use crate::Payload;
use domain::{
    CartEvent, CustomerEvent, Event, NotificationEvent, OrderEvent, PaymentEvent, ProductEvent,
    StreamType,
};

/// Upcasts envelopes of every aggregate. Unknown or undecodable events pass through
/// unchanged: the reader that needs them reports the decode error with context.
#[derive(Debug, Default, Clone, Copy)]
pub struct DomainUpcaster;

fn current<E: Event>(e: &EventEnvelope) -> Option<(u32, Payload)> {
    let decoded = e
        .payload
        .decode_event::<E>(&e.event_type, e.event_version)
        .ok()?;
    Some((decoded.event_version(), Payload::of_event(&decoded)))
}

fn latest_version(event: &EventEnvelope) -> Option<u32> {
    let name = event.event_type.as_str();
    match event.stream_type {
        StreamType::Cart => CartEvent::current_version(name),
        StreamType::Order => OrderEvent::current_version(name),
        StreamType::Payment => PaymentEvent::current_version(name),
        StreamType::Product => ProductEvent::current_version(name),
        StreamType::Notification => NotificationEvent::current_version(name),
        StreamType::Customer => CustomerEvent::current_version(name),
    }
}

impl Upcaster for DomainUpcaster {
    fn is_current(&self, event: &EventEnvelope) -> bool {
        latest_version(event).is_none_or(|v| v == event.event_version)
    }

    fn upcast(&self, mut event: EventEnvelope) -> EventEnvelope {
        let latest = latest_version(&event);
        // Fast path: already current (the overwhelmingly common case on every read).
        if latest.is_none_or(|v| v == event.event_version) {
            return event;
        }
        let upcast = match event.stream_type {
            StreamType::Cart => current::<CartEvent>(&event),
            StreamType::Order => current::<OrderEvent>(&event),
            StreamType::Payment => current::<PaymentEvent>(&event),
            StreamType::Product => current::<ProductEvent>(&event),
            StreamType::Notification => current::<NotificationEvent>(&event),
            StreamType::Customer => current::<CustomerEvent>(&event),
        };
        if let Some((version, payload)) = upcast {
            event.event_version = version;
            event.payload = payload;
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Metadata;
    use domain::event_names;
    use serde_json::json;

    fn payment_event(event_type: &str, version: u32, payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            global_position: Some(7),
            event_id: uuid::Uuid::now_v7(),
            stream_type: StreamType::Payment,
            stream_id: "pay1".to_owned(),
            sequence: 2,
            event_type: event_type.to_owned(),
            event_version: version,
            occurred_at: chrono::Utc::now(),
            payload: payload.into(),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn a_v1_intent_created_comes_out_as_v2_without_its_client_secret() {
        let stored = payment_event(
            event_names::PAYMENT_INTENT_CREATED,
            1,
            json!({ "payment_id": "pay1", "intent_id": "pi_1", "client_secret_ref": "pi_1_secret_x" }),
        );
        assert!(!DomainUpcaster.is_current(&stored));
        let read = DomainUpcaster.upcast(stored.clone());
        assert_eq!(read.event_version, 2);
        assert_eq!(
            read.payload.value(),
            &json!({ "payment_id": "pay1", "intent_id": "pi_1" })
        );
        assert!(
            !read.payload.json().contains("secret"),
            "{}",
            read.payload.json()
        );
        // The rest of the envelope is the stored one.
        assert_eq!(
            (read.event_id, read.sequence, read.global_position),
            (stored.event_id, stored.sequence, stored.global_position)
        );
        assert!(DomainUpcaster.is_current(&read));
    }
}
