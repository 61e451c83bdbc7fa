//! Event export as NDJSON: the analyst endpoint and `backbone events export` share this. The feed
//! is read page by page up to the head seen at the start, so memory stays bounded and a busy
//! store does not make the export endless. A time range (`from`, with or without `to`) is read
//! through the store's time index where it has one ([`EventStore::feed_in_time`]: DynamoDB),
//! and by filtering the feed otherwise. Either way each feed partition's matching events come in
//! its order; across partitions the time index merges the matching events by time, where the
//! feed merges all events (the same order on a one-partition feed).
//!
//! Each line is an envelope with its `global_position`, plus `feed_cursor`: the feed cursor
//! just past that event ([`FeedCursor`]). An export resumes from any line with
//! `after=<its feed_cursor>`; the cursor is opaque (one position per feed partition).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use commands::{EventEnvelope, EventStore, FeedCursor, Pseudonyms, StoreError, StreamRef};
use domain::StreamType;
use futures::Stream;
use std::sync::Arc;

/// Feed page size of an export.
pub const EXPORT_PAGE: usize = 1_000;

/// Which stream(s) to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFilter {
    /// Every stream of a type: `order`.
    Type(StreamType),
    /// One stream: `order#ord_123` (or `order:ord_123`, which needs no URL escaping).
    Stream(StreamRef),
}

impl StreamFilter {
    pub fn parse(s: &str) -> Result<StreamFilter, String> {
        let (ty, id) = match s.split_once(['#', ':']) {
            Some((ty, id)) => (ty, Some(id)),
            None => (s, None),
        };
        let stream_type = StreamType::parse(ty).ok_or_else(|| {
            format!("unknown stream type {ty:?} (cart, order, payment or product)")
        })?;
        match id {
            None => Ok(StreamFilter::Type(stream_type)),
            Some(id) if !id.is_empty() => Ok(StreamFilter::Stream(StreamRef::new(stream_type, id))),
            Some(_) => Err("empty stream id".into()),
        }
    }

    fn matches(&self, e: &EventEnvelope) -> bool {
        match self {
            StreamFilter::Type(t) => e.stream_type == *t,
            StreamFilter::Stream(s) => e.stream_type == s.stream_type && e.stream_id == s.stream_id,
        }
    }
}

/// What to export. Every given criterion must match.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Only events after this feed cursor.
    pub after: FeedCursor,
    /// Occurred at or after.
    pub from: Option<DateTime<Utc>>,
    /// Occurred at or before.
    pub to: Option<DateTime<Utc>>,
    /// Only this event type, for example `OrderPlaced`.
    pub event_type: Option<String>,
    pub stream: Option<StreamFilter>,
    /// At most this many events.
    pub limit: Option<u64>,
}

impl ExportFilter {
    pub fn matches(&self, e: &EventEnvelope) -> bool {
        self.from.is_none_or(|f| e.occurred_at >= f)
            && self.to.is_none_or(|t| e.occurred_at <= t)
            && self.event_type.as_ref().is_none_or(|t| *t == e.event_type)
            && self.stream.as_ref().is_none_or(|s| s.matches(e))
    }
}

struct Cursor {
    after: FeedCursor,
    head: Option<FeedCursor>,
    emitted: u64,
    done: bool,
    /// Whether the time index serves this export (`None` until the first page asked).
    indexed: Option<bool>,
}

/// The time range a filter asks for, when it has a start: an open end is now plus a margin
/// for clock skew between writers.
fn time_range(filter: &ExportFilter) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let from = filter.from?;
    Some((
        from,
        filter
            .to
            .unwrap_or_else(|| Utc::now() + chrono::Duration::hours(1)),
    ))
}

/// An exported line: the envelope and the cursor past it.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    event: &'a EventEnvelope,
    feed_cursor: &'a FeedCursor,
}

/// The matching events as NDJSON chunks (one chunk per feed page, one envelope with its
/// `global_position` and `feed_cursor` per line).
///
/// With `mask`, personal fields read `[masked]` and customer ids are pseudonyms
/// ([`Pseudonyms::mask`]): the form for a reader without the `pii` scope.
pub fn ndjson(
    store: Arc<dyn EventStore>,
    filter: ExportFilter,
    page: usize,
    mask: Option<Arc<Pseudonyms>>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let start = Cursor {
        after: filter.after.clone(),
        head: None,
        emitted: 0,
        done: filter.limit == Some(0),
        indexed: None,
    };
    let range = time_range(&filter);
    let page = page.max(1);
    futures::stream::try_unfold(start, move |mut c| {
        let store = store.clone();
        let filter = filter.clone();
        let mask = mask.clone();
        async move {
            if c.done {
                return Ok(None);
            }
            let head = match &c.head {
                Some(h) => h.clone(),
                None => {
                    let h = store.head().await?;
                    c.head = Some(h.clone());
                    h
                }
            };
            if c.after.covers(&head) {
                return Ok(None);
            }
            let indexed = match (range, c.indexed) {
                (Some((from, to)), None | Some(true)) => {
                    store
                        .feed_in_time(commands::FeedTimeRange {
                            after: &c.after,
                            from,
                            to,
                            limit: page,
                        })
                        .await?
                }
                _ => None,
            };
            c.indexed = Some(indexed.is_some());
            let events = match indexed {
                Some(events) if events.is_empty() => return Ok(None),
                Some(events) => events,
                None => store.feed(&c.after, page).await?,
            };
            if events.is_empty() {
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(events.len() * 512);
            for e in &events {
                let Some(position) = e.global_position else {
                    return Err(StoreError::Internal(format!(
                        "feed event {} has no position",
                        e.event_id
                    )));
                };
                if !head.includes(position) {
                    c.done = true;
                    break;
                }
                c.after.advance(position);
                if !filter.matches(e) {
                    continue;
                }
                let written = match &mask {
                    Some(pseudonyms) => {
                        let mut masked = e.clone();
                        pseudonyms.mask(&mut masked);
                        serde_json::to_writer(
                            &mut buf,
                            &Line {
                                event: &masked,
                                feed_cursor: &c.after,
                            },
                        )
                    }
                    None => serde_json::to_writer(
                        &mut buf,
                        &Line {
                            event: e,
                            feed_cursor: &c.after,
                        },
                    ),
                };
                written
                    .map_err(|err| StoreError::Internal(format!("cannot encode event: {err}")))?;
                buf.push(b'\n');
                c.emitted += 1;
                if filter.limit.is_some_and(|l| c.emitted >= l) {
                    c.done = true;
                    break;
                }
            }
            if c.after.covers(&head) {
                c.done = true;
            }
            Ok(Some((Bytes::from(buf), c)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_filters_parse_types_and_single_streams() {
        assert_eq!(
            StreamFilter::parse("order").unwrap(),
            StreamFilter::Type(StreamType::Order)
        );
        assert_eq!(
            StreamFilter::parse("cart:cart_1").unwrap(),
            StreamFilter::Stream(StreamRef::new(StreamType::Cart, "cart_1"))
        );
        assert!(StreamFilter::parse("nope").is_err());
        assert!(StreamFilter::parse("order#").is_err());
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn a_line_is_the_envelope_and_the_cursor_past_it() {
        let event = EventEnvelope {
            global_position: Some(commands::feed::pack(2, 7)),
            event_id: uuid::Uuid::nil(),
            stream_type: StreamType::Order,
            stream_id: "ord_1".into(),
            sequence: 1,
            event_type: "OrderPlaced".into(),
            event_version: 1,
            occurred_at: Utc::now(),
            payload: commands::Payload::from_json(r#"{"a":1}"#.into()).unwrap(),
            metadata: Default::default(),
        };
        let cursor: FeedCursor = "3.0.7".parse().unwrap();
        let text = serde_json::to_string(&Line {
            event: &event,
            feed_cursor: &cursor,
        })
        .unwrap();
        let back: EventEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["feed_cursor"], "3.0.7");
    }
}
