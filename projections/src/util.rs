//! Helpers shared by the four projections.

use crate::store::{DocTx, IndexEntry, ProjectionError, ReadModelError, Typed, TypedDoc};
use chrono::{DateTime, Utc};
use commands::EventEnvelope;
use domain::{DecodeError, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

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

pub(crate) fn read_doc<T: DeserializeOwned>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
) -> Result<Option<T>, ProjectionError> {
    let mut parsed = Ok(None);
    tx.read_with(collection, key, &mut |body| {
        if let Some(body) = body {
            parsed = T::deserialize(body).map(Some);
        }
    })?;
    parsed.map_err(|e| ProjectionError::CorruptDoc {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// No secondary index entries (for `update_doc` / `peek_doc` of unlisted documents).
pub(crate) fn no_index<T>(_: &T) -> Vec<IndexEntry> {
    Vec::new()
}

fn corrupt(collection: &str, key: &str, e: impl ToString) -> ProjectionError {
    ProjectionError::CorruptDoc {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

/// The batch's typed document for (collection, key), loaded on first use; `None` when the
/// transaction has no typed cache.
fn typed<'t, T>(
    tx: &'t mut dyn DocTx,
    collection: &str,
    key: &str,
    index: fn(&T) -> Vec<IndexEntry>,
) -> Result<Option<&'t mut Typed<T>>, ProjectionError>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let mut load =
        |body: Option<&serde_json::Value>| -> Result<Box<dyn TypedDoc>, ProjectionError> {
            let doc = body
                .map(T::deserialize)
                .transpose()
                .map_err(|e| corrupt(collection, key, e))?;
            Ok(Box::new(Typed::new(doc, index)))
        };
    match tx.typed(collection, key, &mut load)? {
        None => Ok(None),
        Some(doc) => doc
            .as_any_mut()
            .downcast_mut::<Typed<T>>()
            .map(Some)
            .ok_or_else(|| corrupt(collection, key, "cached under another document type")),
    }
}

/// Reads, changes and (at the end of the batch) writes one typed document. `change` gets `None`
/// when the document does not exist; leaving `None` writes nothing, setting `None` deletes it.
/// `index` computes the document's index entries when it is written.
pub(crate) fn update_doc<T, R>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
    index: fn(&T) -> Vec<IndexEntry>,
    change: impl FnOnce(&mut Option<T>) -> R,
) -> Result<R, ProjectionError>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    if let Some(cached) = typed(tx, collection, key, index)? {
        cached.dirty = true;
        return Ok(change(&mut cached.doc));
    }
    // No typed cache: read, change and write through.
    let mut doc = read_doc::<T>(tx, collection, key)?;
    let existed = doc.is_some();
    let result = change(&mut doc);
    match doc {
        Some(doc) => write_doc(tx, collection, key, &doc, index(&doc))?,
        None if existed => tx.delete(collection, key)?,
        None => {}
    }
    Ok(result)
}

/// A copy of one typed document, through the batch's typed cache when there is one.
pub(crate) fn peek_doc<T>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
    index: fn(&T) -> Vec<IndexEntry>,
) -> Result<Option<T>, ProjectionError>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    match typed(tx, collection, key, index)? {
        Some(cached) => Ok(cached.doc.clone()),
        None => read_doc(tx, collection, key),
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
    if let Some(order_id) = crate::describe::payment_order_id(payment_event) {
        return Ok(Some(order_id.to_owned()));
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
    use chrono::TimeZone;

    #[test]
    fn sort_time_is_fixed_width_and_chronological() {
        let a = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("time");
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
