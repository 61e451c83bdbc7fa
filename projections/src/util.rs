//! Helpers shared by the four projections.

use crate::store::{DocTx, IndexEntry, ProjectionError, ReadModelError};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{DecodeError, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A fixed-width UTC timestamp (`2026-11-21T22:00:00.000000Z`), so that sort keys built from it
/// order chronologically as plain strings.
pub(crate) fn sort_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A sequence number padded so that it sorts numerically as a string.
pub(crate) fn sort_seq(seq: u64) -> String {
    format!("{seq:020}")
}

/// Decodes an envelope into a typed event of one stream. An event type this build does not know
/// is `None` (ignored for forward compatibility); a malformed payload or a newer schema version is
/// an error, so that the projection stops rather than silently diverging.
pub(crate) fn decode<E: Event>(
    projection: &'static str,
    event: &EventEnvelope,
) -> Result<Option<E>, ProjectionError> {
    match E::decode(&event.event_type, event.event_version, event.payload.clone()) {
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

pub(crate) fn read_doc<T: DeserializeOwned>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
) -> Result<Option<T>, ProjectionError> {
    match tx.get(collection, key)? {
        None => Ok(None),
        Some(body) => serde_json::from_value(body)
            .map(Some)
            .map_err(|e| ProjectionError::CorruptDoc {
                collection: collection.to_owned(),
                key: key.to_owned(),
                reason: e.to_string(),
            }),
    }
}

pub(crate) fn write_doc<T: Serialize>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
    doc: &T,
    index: Vec<IndexEntry>,
) -> Result<(), ProjectionError> {
    let body = to_body(collection, key, doc)?;
    tx.put(collection, key, body, index)?;
    Ok(())
}

pub(crate) fn to_body<T: Serialize>(
    collection: &str,
    key: &str,
    doc: &T,
) -> Result<Value, ProjectionError> {
    serde_json::to_value(doc).map_err(|e| ProjectionError::Encode {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
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

/// The link document a projection keeps from a payment to its order, written at
/// `PaymentRequested` (always the first event of a payment stream).
#[derive(serde::Serialize, serde::Deserialize)]
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
        let link = PaymentLink {
            order_id: order_id.to_string(),
        };
        write_doc(tx, links, &event.stream_id, &link, Vec::new())?;
        return Ok(Some(link.order_id));
    }
    if let Some(order_id) = crate::describe::payment_order_id(payment_event) {
        return Ok(Some(order_id.to_owned()));
    }
    let link = read_doc::<PaymentLink>(tx, links, &event.stream_id)?;
    if link.is_none() {
        tracing::warn!(
            payment_id = %event.stream_id,
            event_type = %event.event_type,
            "payment event without a known order ignored"
        );
    }
    Ok(link.map(|l| l.order_id))
}
