//! Helpers shared by the four projections.

use crate::docs::{no_index, peek_doc, update_doc};
use crate::store::{DocTx, ProjectionError, ReadModelError, ReadModelStore};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{DecodeError, Event};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The sort key of an order in every order listing (order history, support): placed_at `#`
/// order id, so that orders list chronologically and each key is unique.
pub(crate) fn order_sort(placed_at: &DateTime<Utc>, order_id: &str) -> String {
    format!("{}#{}", sort_time(placed_at), order_id)
}

/// A fixed-width UTC timestamp (`2026-11-21T22:00:00.000000Z`), so that sort keys built from it
/// order chronologically as plain strings.
pub(crate) fn sort_time(at: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    // Hand-rolled rather than `format("%Y-...")`, which parses its pattern on every call: this
    // runs for every event. Years outside 0..=9999 do not occur in this system.
    let mut out = String::with_capacity(27);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.nanosecond() % 1_000_000_000 / 1_000
    );
    out
}

/// A sequence number padded so that it sorts numerically as a string.
pub(crate) fn sort_seq(seq: u64) -> String {
    format!("{seq:020}")
}

/// Decodes an envelope into a typed event of one stream. An event type this build does not know
/// is `None` (ignored for forward compatibility); a malformed payload or a newer schema version is
/// an error, so that the projection stops rather than silently diverging. Events at their current
/// version are read straight from the payload's text, older ones are upcast
/// ([`commands::Payload::decode_event`]).
pub(crate) fn decode<E: Event>(
    projection: &'static str,
    event: &EventEnvelope,
) -> Result<Option<E>, ProjectionError> {
    match event
        .payload
        .decode_event::<E>(&event.event_type, event.event_version)
    {
        Ok(e) => Ok(Some(e)),
        Err(DecodeError::UnknownType { .. }) => {
            tracing::debug!(
                projection,
                event_type = %event.event_type,
                stream = %event.stream(),
                "ignoring unknown event type"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Turns a stored document into a view for the query functions.
pub(crate) fn from_body<T: DeserializeOwned>(
    collection: &str,
    key: &str,
    body: Value,
) -> Result<T, ReadModelError> {
    serde_json::from_value(body).map_err(|e| ReadModelError::Corrupt {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The committed document at (collection, key) as `T`, if there is one.
pub(crate) async fn get_typed<T: DeserializeOwned>(
    models: &dyn ReadModelStore,
    collection: &str,
    key: &str,
) -> Result<Option<T>, ReadModelError> {
    models
        .get(collection, key)
        .await?
        .map(|body| from_body(collection, key, body))
        .transpose()
}

/// Decodes a document listed by a query of `collection`'s index (every one is kept), as
/// [`crate::paging::page`] wants it.
pub(crate) fn listed<T: DeserializeOwned>(
    collection: &'static str,
) -> impl Fn(Value) -> Result<Option<T>, ReadModelError> {
    move |body| from_body(collection, "(listed)", body).map(Some)
}

/// The link document a projection keeps from a payment to its order, written at
/// `PaymentRequested` (always the first event of a payment stream).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct PaymentLink {
    order_id: String,
}

/// Finds the order a payment event belongs to: from the payload when it names the order, else
/// from the projection's own link document (`links` collection, keyed by payment id). Records the
/// link on `PaymentRequested`. `None` when the payment's request was never seen, which gap
/// filling rules out within one stream.
pub(crate) fn payment_order(
    tx: &mut dyn DocTx,
    links: &str,
    event: &EventEnvelope,
    payment_event: &domain::PaymentEvent,
) -> Result<Option<String>, ProjectionError> {
    if let domain::PaymentEvent::PaymentRequested { order_id, .. } = payment_event {
        let order_id = order_id.to_string();
        let link = PaymentLink {
            order_id: order_id.clone(),
        };
        update_doc(tx, links, &event.stream_id, no_index, |doc| {
            *doc = Some(link);
        })?;
        return Ok(Some(order_id));
    }
    if let Some(order_id) = payment_event.order_id() {
        return Ok(Some(order_id.as_str().to_owned()));
    }
    let link = peek_doc::<PaymentLink>(tx, links, &event.stream_id, no_index)?;
    if link.is_none() {
        tracing::warn!(
            payment_id = %event.stream_id,
            event_type = %event.event_type,
            "payment event without a known order ignored"
        );
    }
    Ok(link.map(|l| l.order_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_time_is_fixed_width_and_chronological() {
        let a: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().expect("time");
        let b = a + chrono::Duration::microseconds(1_500_001);
        assert_eq!(sort_time(&a), "2026-01-02T03:04:05.000000Z");
        assert_eq!(sort_time(&b), "2026-01-02T03:04:06.500001Z");
        assert_eq!(
            sort_time(&a),
            a.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        );
        assert!(sort_time(&a) < sort_time(&b));
    }
}
