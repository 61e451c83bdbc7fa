//! Row encoding and decoding, and the one place rusqlite errors become [`StoreError`]s.
//!
//! Decoding sits on the feed's hot path (a full scan must decode well over a million events per
//! second), so it reads borrowed column text, parses our own timestamp format by hand, and reuses
//! the last decoded metadata when consecutive rows carry the same text (every event of a commit
//! shares one).

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Utc};
use commands::{EventEnvelope, Metadata, StoreError, StreamRef};
use domain::StreamType;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Params, Row};
use uuid::Uuid;

/// The column list every event query selects, in the order [`Decoder::decode`] expects.
pub(crate) const EVENT_COLUMNS: &str = "global_position, event_id, stream_type, stream_id, \
     sequence, event_type, event_version, occurred_at, payload, metadata";

/// Translates a rusqlite error: a busy or locked database is worth retrying, anything else is not.
pub(crate) fn sql_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("sqlite busy: {e}"))
        }
        _ => StoreError::Internal(format!("sqlite: {e}")),
    }
}

/// The columns of the one row `sql` selects with `params` (a cached statement), as a tuple;
/// `None` when it selects none.
pub(crate) fn optional_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<Option<T>, StoreError>
where
    T: for<'r> TryFrom<&'r Row<'r>, Error = rusqlite::Error>,
{
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, |row| T::try_from(row)).optional())
        .map_err(sql_error)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("undecodable stored {what}: {detail}"))
}

/// The stored form of `occurred_at`: RFC 3339 in UTC with exactly nine fractional digits, so it
/// has a fixed width (for years 0000-9999) and sorts as text in time order.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses [`format_timestamp`]'s output without chrono's general parser, falling back to it for
/// anything else (other widths, offsets, or rows written by hand).
pub(crate) fn parse_timestamp(s: &[u8]) -> Result<DateTime<Utc>, StoreError> {
    fast_timestamp(s)
        .or_else(|| {
            let s = std::str::from_utf8(s).ok()?;
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
        .ok_or_else(|| corrupt("timestamp", String::from_utf8_lossy(s)))
}

fn fast_timestamp(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != 30
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[29] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    let time =
        NaiveTime::from_hms_nano_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 29)?)?;
    Some(Utc.from_utc_datetime(&date.and_time(time)))
}

/// Clamps a caller's `u64` to SQLite's signed 64-bit integers (`u64::MAX` means "no bound").
pub(crate) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn bytes<'r>(row: &'r Row<'_>, idx: usize, what: &str) -> Result<&'r [u8], StoreError> {
    match row.get_ref(idx).map_err(sql_error)? {
        ValueRef::Text(bytes) => Ok(bytes),
        other => Err(corrupt(what, format!("{:?}", other.data_type()))),
    }
}

fn text<'r>(row: &'r Row<'_>, idx: usize, what: &str) -> Result<&'r str, StoreError> {
    std::str::from_utf8(bytes(row, idx, what)?).map_err(|e| corrupt(what, e))
}

fn int(row: &Row<'_>, idx: usize, what: &str) -> Result<i64, StoreError> {
    match row.get_ref(idx).map_err(sql_error)? {
        ValueRef::Integer(v) => Ok(v),
        other => Err(corrupt(what, format!("{:?}", other.data_type()))),
    }
}

fn unsigned(row: &Row<'_>, idx: usize, what: &str) -> Result<u64, StoreError> {
    let v = int(row, idx, what)?;
    u64::try_from(v).map_err(|e| corrupt(what, e))
}

/// Decodes event rows selected with [`EVENT_COLUMNS`]; keep one per query to reuse metadata.
#[derive(Default)]
pub(crate) struct Decoder {
    last_metadata: Option<(Vec<u8>, Metadata)>,
}

impl Decoder {
    /// Decodes one row. When the caller already knows the stream (load and read), its type and
    /// id are cloned from `known` instead of being decoded again.
    pub(crate) fn decode(
        &mut self,
        row: &Row<'_>,
        known: Option<&StreamRef>,
    ) -> Result<EventEnvelope, StoreError> {
        let (stream_type, stream_id) = match known {
            Some(s) => (s.stream_type, s.stream_id.clone()),
            None => {
                let raw = text(row, 2, "stream_type")?;
                let stream_type =
                    StreamType::parse(raw).ok_or_else(|| corrupt("stream_type", raw))?;
                (stream_type, text(row, 3, "stream_id")?.to_owned())
            }
        };
        let event_id = Uuid::try_parse_ascii(bytes(row, 1, "event_id")?)
            .map_err(|e| corrupt("event_id", e))?;
        let version = int(row, 6, "event_version")?;
        // JSON columns are parsed from bytes: serde_json validates UTF-8 as it goes.
        let payload = bytes(row, 8, "payload")?;
        Ok(EventEnvelope {
            global_position: Some(unsigned(row, 0, "global_position")?),
            event_id,
            stream_type,
            stream_id,
            sequence: unsigned(row, 4, "sequence")?,
            event_type: text(row, 5, "event_type")?.to_owned(),
            event_version: u32::try_from(version).map_err(|e| corrupt("event_version", e))?,
            occurred_at: parse_timestamp(bytes(row, 7, "occurred_at")?)?,
            payload: serde_json::from_slice(payload).map_err(|e| corrupt("payload", e))?,
            metadata: self.metadata(bytes(row, 9, "metadata")?)?,
        })
    }

    fn metadata(&mut self, raw: &[u8]) -> Result<Metadata, StoreError> {
        if let Some((last_raw, last)) = &self.last_metadata {
            if last_raw.as_slice() == raw {
                return Ok(last.clone());
            }
        }
        let parsed: Metadata = serde_json::from_slice(raw).map_err(|e| corrupt("metadata", e))?;
        match &mut self.last_metadata {
            Some((last_raw, last)) => {
                last_raw.clear();
                last_raw.extend_from_slice(raw);
                last.clone_from(&parsed);
            }
            None => self.last_metadata = Some((raw.to_vec(), parsed.clone())),
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_the_fast_path() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 21, 22, 7, 13)
            .single()
            .expect("valid date")
            + chrono::Duration::nanoseconds(5);
        let s = format_timestamp(&t);
        assert_eq!(s, "2026-11-21T22:07:13.000000005Z");
        assert_eq!(fast_timestamp(s.as_bytes()), Some(t));
        assert_eq!(parse_timestamp(s.as_bytes()).ok(), Some(t));
    }

    #[test]
    fn other_rfc3339_forms_use_the_general_parser() {
        let parsed = parse_timestamp(b"2026-11-21T23:07:13+01:00").ok();
        let expected = Utc.with_ymd_and_hms(2026, 11, 21, 22, 7, 13).single();
        assert_eq!(parsed, expected);
        assert!(parse_timestamp(b"yesterday").is_err());
    }

    #[test]
    fn huge_bounds_clamp_to_sqlite_integers() {
        assert_eq!(to_sql_int(u64::MAX), i64::MAX);
        assert_eq!(to_sql_int(7), 7);
    }
}
