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
