//! The DynamoDB item layout of events, shared by the event store, the feed indexer and the relay
//! (which decodes the NEW_IMAGE of the events table's stream through [`AttrSource`]).
//!
//! An event item of the `events` table:
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `stream` | S (pk) | `order#<id>` ([`StreamRef::key`]) |
//! | `seq` | N (sk) | the sequence, from 1 |
//! | `event_id`, `stream_type`, `stream_id`, `event_type` | S | envelope fields |
//! | `event_version` | N | |
//! | `occurred_at` | S | RFC 3339, UTC, nine fractional digits (fixed width, sorts as text) |
//! | `payload`, `metadata` | S | JSON text (exact: no float or map conversion) |
//! | `bucket` | S | GSI pk: `2026-11-21T22#07` (hour, shard of 16) |
//! | `bucket_sort` | S | GSI sk: `<occurred_at>#<stream>#<seq, 20 digits>` |
//!
//! A stream's snapshot lives in the stream's own partition, as the item at `seq` =
//! [`SNAPSHOT_SEQ`] (10^20, above every `u64` sequence), so one descending Query reads the
//! snapshot first and the newest events after it. It has no `bucket`, so the time GSI never
//! holds it, and no event range (`seq BETWEEN 1 AND u64::MAX`) reaches it:
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `stream` | S (pk) | as above |
//! | `seq` | N (sk) | [`SNAPSHOT_SEQ`] |
//! | `version` | N | the stream version the state was taken at |
//! | `schema_version` | N | the aggregate state's schema version |
//! | `state` | S | JSON text |

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use commands::{EventEnvelope, Metadata, NewEvent, Snapshot, StoreError, StreamRef};
use domain::StreamType;
use std::collections::HashMap;
use uuid::Uuid;

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

pub const STREAM: &str = "stream";
pub const SEQ: &str = "seq";
pub const EVENT_ID: &str = "event_id";
pub const STREAM_TYPE: &str = "stream_type";
pub const STREAM_ID: &str = "stream_id";
pub const EVENT_TYPE: &str = "event_type";
pub const EVENT_VERSION: &str = "event_version";
pub const OCCURRED_AT: &str = "occurred_at";
pub const PAYLOAD: &str = "payload";
pub const METADATA: &str = "metadata";
pub const BUCKET: &str = "bucket";
pub const BUCKET_SORT: &str = "bucket_sort";
/// The feed position, on feed items only.
pub const POSITION: &str = "pos";
/// The sort key of a stream's snapshot item: 10^20, above every `u64` sequence.
pub const SNAPSHOT_SEQ: &str = "100000000000000000000";
pub const SNAPSHOT_VERSION: &str = "version";
pub const SCHEMA_VERSION: &str = "schema_version";
pub const STATE: &str = "state";

/// Shards per hour bucket of the time GSI. Changing it (or [`shard_of`]) strands old items.
pub const TIME_SHARDS: u64 = 16;

/// Read access to an item's scalar attributes, whatever SDK type holds them (the DynamoDB
/// client's `AttributeValue`, or DynamoDB Streams' own copy of it in the relay).
pub trait AttrSource {
    fn string(&self, name: &str) -> Option<&str>;
    /// A number attribute's decimal text.
    fn number(&self, name: &str) -> Option<&str>;
}

impl AttrSource for HashMap<String, AttributeValue> {
    fn string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(AttributeValue::S(s)) => Some(s),
            _ => None,
        }
    }
    fn number(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(AttributeValue::N(n)) => Some(n),
            _ => None,
        }
    }
}

impl AttrSource for HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue> {
    fn string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(aws_sdk_dynamodbstreams::types::AttributeValue::S(s)) => Some(s),
            _ => None,
        }
    }
    fn number(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(aws_sdk_dynamodbstreams::types::AttributeValue::N(n)) => Some(n),
            _ => None,
        }
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Whether an item of the events table is a stream's snapshot rather than an event.
pub fn is_snapshot(item: &impl AttrSource) -> bool {
    item.number(SEQ) == Some(SNAPSHOT_SEQ)
}

/// The snapshot item of `stream` (see the module docs).
pub fn snapshot_item(stream: &StreamRef, snapshot: &Snapshot) -> Result<Item, StoreError> {
    let state = serde_json::to_string(&snapshot.state)
        .map_err(|e| StoreError::InvalidCommit(format!("unencodable snapshot: {e}")))?;
    Ok(HashMap::from([
        (STREAM.to_owned(), s(stream.key())),
        (SEQ.to_owned(), AttributeValue::N(SNAPSHOT_SEQ.to_owned())),
        (SNAPSHOT_VERSION.to_owned(), n(snapshot.version)),
        (
            SCHEMA_VERSION.to_owned(),
            n(u64::from(snapshot.schema_version)),
        ),
        (STATE.to_owned(), s(state)),
    ]))
}

/// The snapshot a snapshot item holds.
pub fn decode_snapshot(item: &impl AttrSource) -> Result<Snapshot, StoreError> {
    let schema_version = get_n(item, SCHEMA_VERSION)?;
    Ok(Snapshot {
        version: get_n(item, SNAPSHOT_VERSION)?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(SCHEMA_VERSION, e))?,
        state: serde_json::from_str(get_s(item, STATE)?).map_err(|e| corrupt(STATE, e))?,
    })
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("undecodable stored {what}: {detail}"))
}

/// The stored timestamp form: fixed width, so it sorts as text in time order.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt("timestamp", format!("{s}: {e}")))
}

/// FNV-1a over the stream key: stable across builds and platforms (unlike `DefaultHasher`),
/// which matters because the shard is part of stored keys.
pub fn shard_of(stream_key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % TIME_SHARDS
}

/// The hour of `t` as used in bucket keys: `2026-11-21T22`.
pub fn hour_of(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H").to_string()
}

/// The time GSI partition key of an event: `<hour>#<shard, two digits>`.
pub fn time_bucket(occurred_at: &DateTime<Utc>, stream_key: &str) -> String {
    format!("{}#{:02}", hour_of(occurred_at), shard_of(stream_key))
}

/// The time GSI sort key: `<occurred_at>#<stream>#<seq, zero-padded>`.
pub fn time_sort_key(occurred_at: &DateTime<Utc>, stream_key: &str, seq: u64) -> String {
    format!("{}#{stream_key}#{seq:020}", format_timestamp(occurred_at))
}

/// The start of the hour containing `t`.
pub(crate) fn truncate_to_hour(t: &DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        // Zeroing sub-hour fields of a valid UTC time is always valid.
        .unwrap_or(*t)
}

fn json_text(what: &str, v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::InvalidCommit(format!("unencodable {what}: {e}")))
}

/// Inserts into `$item` the attributes of the fields that a [`NewEvent`] and an
/// [`EventEnvelope`] share (the event itself, apart from its stream and sequence); `?` on an
/// unencodable metadata.
macro_rules! insert_event_fields {
    ($item:ident, $e:expr) => {{
        let e = $e;
        $item.insert(EVENT_ID.into(), s(e.event_id.to_string()));
        $item.insert(EVENT_TYPE.into(), s(e.event_type.clone()));
        $item.insert(EVENT_VERSION.into(), n(u64::from(e.event_version)));
        $item.insert(OCCURRED_AT.into(), s(format_timestamp(&e.occurred_at)));
        $item.insert(PAYLOAD.into(), s(e.payload.json()));
        $item.insert(METADATA.into(), s(json_text("metadata", &e.metadata)?));
    }};
}

/// The item of a new event at `seq` of `stream`.
pub fn event_item(stream: &StreamRef, seq: u64, e: &NewEvent) -> Result<Item, StoreError> {
    let key = stream.key();
    let mut item = Item::with_capacity(13);
    item.insert(BUCKET.into(), s(time_bucket(&e.occurred_at, &key)));
    item.insert(
        BUCKET_SORT.into(),
        s(time_sort_key(&e.occurred_at, &key, seq)),
    );
    item.insert(STREAM.into(), s(key));
    item.insert(SEQ.into(), n(seq));
    item.insert(STREAM_TYPE.into(), s(stream.stream_type.as_str()));
    item.insert(STREAM_ID.into(), s(stream.stream_id.clone()));
    insert_event_fields!(item, e);
    Ok(item)
}

/// The envelope attributes of a stored event (no keys of the time GSI): feed items copy these.
pub fn envelope_item(e: &EventEnvelope) -> Result<Item, StoreError> {
    let stream = e.stream();
    let mut item = Item::with_capacity(12);
    item.insert(STREAM.into(), s(stream.key()));
    item.insert(SEQ.into(), n(e.sequence));
    item.insert(STREAM_TYPE.into(), s(e.stream_type.as_str()));
    item.insert(STREAM_ID.into(), s(e.stream_id.clone()));
    insert_event_fields!(item, e);
    Ok(item)
}

fn get_s<'a>(item: &'a impl AttrSource, name: &str) -> Result<&'a str, StoreError> {
    item.string(name).ok_or_else(|| corrupt(name, "missing"))
}

fn get_n(item: &impl AttrSource, name: &str) -> Result<u64, StoreError> {
    let raw = item.number(name).ok_or_else(|| corrupt(name, "missing"))?;
    raw.parse()
        .map_err(|e| corrupt(name, format!("{raw}: {e}")))
}

/// Decodes an event item (of the events table, a feed item, or a stream image). Feed items carry
/// `pos`, which becomes `global_position`; other items leave it `None`.
pub fn decode_event(item: &impl AttrSource) -> Result<EventEnvelope, StoreError> {
    let raw_type = get_s(item, STREAM_TYPE)?;
    let stream_type = StreamType::parse(raw_type).ok_or_else(|| corrupt(STREAM_TYPE, raw_type))?;
    let event_id = get_s(item, EVENT_ID)?;
    let version = get_n(item, EVENT_VERSION)?;
    let metadata: Metadata =
        serde_json::from_str(get_s(item, METADATA)?).map_err(|e| corrupt(METADATA, e))?;
    Ok(EventEnvelope {
        global_position: match item.number(POSITION) {
            Some(_) => Some(get_n(item, POSITION)?),
            None => None,
        },
        event_id: Uuid::try_parse(event_id).map_err(|e| corrupt(EVENT_ID, e))?,
        stream_type,
        stream_id: get_s(item, STREAM_ID)?.to_owned(),
        sequence: get_n(item, SEQ)?,
        event_type: get_s(item, EVENT_TYPE)?.to_owned(),
        event_version: u32::try_from(version).map_err(|e| corrupt(EVENT_VERSION, e))?,
        occurred_at: parse_timestamp(get_s(item, OCCURRED_AT)?)?,
        payload: serde_json::from_str(get_s(item, PAYLOAD)?).map_err(|e| corrupt(PAYLOAD, e))?,
        metadata,
    })
}

/// The envelope a new event becomes once stored at `seq` of `stream`.
pub fn envelope_of(stream: &StreamRef, seq: u64, e: &NewEvent) -> EventEnvelope {
    EventEnvelope {
        global_position: None,
        event_id: e.event_id,
        stream_type: stream.stream_type,
        stream_id: stream.stream_id.clone(),
        sequence: seq,
        event_type: e.event_type.clone(),
        event_version: e.event_version,
        occurred_at: e.occurred_at,
        payload: e.payload.clone(),
        metadata: e.metadata.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use commands::conformance::new_event;
    use serde_json::json;

    #[test]
    fn an_event_item_round_trips() {
        let stream = StreamRef::new(StreamType::Order, "o-1");
        let e = NewEvent {
            event_version: 3,
            occurred_at: Utc
                .with_ymd_and_hms(2026, 11, 21, 22, 7, 13)
                .single()
                .expect("valid date")
                + chrono::Duration::nanoseconds(5),
            ..new_event(
                "OrderPlaced",
                json!({"big": 9_007_199_254_740_993_u64, "s": "✓"}),
            )
        };
        let item = event_item(&stream, 7, &e).expect("encode");
        assert_eq!(
            decode_event(&item).expect("decode"),
            envelope_of(&stream, 7, &e)
        );
        let bucket = item.string(BUCKET).expect("bucket");
        assert!(bucket.starts_with("2026-11-21T22#"), "{bucket}");
        assert_eq!(bucket.len(), "2026-11-21T22#07".len());
        assert_eq!(
            item.string(BUCKET_SORT),
            Some("2026-11-21T22:07:13.000000005Z#order#o-1#00000000000000000007")
        );
    }

    #[test]
    fn a_stream_image_decodes_like_the_item() {
        use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
        let stream = StreamRef::new(StreamType::Cart, "c-1");
        let e = new_event("ItemAdded", json!({"q": 2}));
        let item = event_item(&stream, 3, &e).expect("encode");
        let image: HashMap<String, StreamValue> = item
            .iter()
            .filter_map(|(k, v)| match v {
                AttributeValue::S(x) => Some((k.clone(), StreamValue::S(x.clone()))),
                AttributeValue::N(x) => Some((k.clone(), StreamValue::N(x.clone()))),
                _ => None,
            })
            .collect();
        assert_eq!(
            decode_event(&image).expect("decode"),
            decode_event(&item).expect("decode")
        );
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("order#o-1"), shard_of("order#o-1"));
        let used: std::collections::HashSet<u64> =
            (0..200).map(|i| shard_of(&format!("order#{i}"))).collect();
        assert_eq!(used.len() as u64, TIME_SHARDS);
    }
}
