//! The project's own aggregate contract: a pure `decide` and a rule-free `apply`.
//!
//! cqrs-es supplies the framework traits (see the `cqrs-es` feature); this trait is what the
//! command service uses, because it is synchronous and gives the store explicit names and versions.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// The four stream types of the backbone. The string form is stored in every envelope.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    Cart,
    Order,
    Payment,
    Product,
}

impl StreamType {
    pub const ALL: [StreamType; 4] = [
        StreamType::Cart,
        StreamType::Order,
        StreamType::Payment,
        StreamType::Product,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Cart => "cart",
            StreamType::Order => "order",
            StreamType::Payment => "payment",
            StreamType::Product => "product",
        }
    }

    pub fn parse(s: &str) -> Option<StreamType> {
        match s {
            "cart" => Some(StreamType::Cart),
            "order" => Some(StreamType::Order),
            "payment" => Some(StreamType::Payment),
            "product" => Some(StreamType::Product),
            _ => None,
        }
    }
}

impl std::fmt::Display for StreamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stored event could not be turned back into a typed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type}")]
    UnknownType { event_type: String },
    #[error("unsupported version {version} of event type {event_type}")]
    UnsupportedVersion { event_type: String, version: u32 },
    #[error("malformed payload for {event_type} v{version}: {reason}")]
    Malformed {
        event_type: String,
        version: u32,
        reason: String,
    },
}

/// A domain event with a stable stored name and an explicit schema version.
///
/// Contract: `event_type()` never derives from a Rust identifier; `decode(event_type(),
/// event_version(), payload())` returns an equal event; `decode` accepts every older version it has
/// ever written and upcasts it to the current shape.
pub trait Event: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync {
    /// The stable stored name, for example "OrderPlaced".
    fn event_type(&self) -> &'static str;
    /// The current schema version of this event type.
    fn event_version(&self) -> u32;
    /// The current schema version of the event type stored as `event_type`; `None` for a name
    /// this build does not know.
    fn current_version(event_type: &str) -> Option<u32>;
    /// The payload JSON (the event's named fields, without the type tag).
    fn payload(&self) -> serde_json::Value;
    /// The same payload as JSON text, for writing. Implementations encode it without building
    /// the `serde_json::Value` tree of [`Event::payload`].
    fn payload_json(&self) -> String {
        self.payload().to_string()
    }
    /// Rebuilds an event from its stored name, version and payload, upcasting old versions.
    fn decode(
        event_type: &str,
        event_version: u32,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError>;
}

/// A pure aggregate: deciding has no I/O, applying holds no rules.
pub trait EventSourced:
    Default + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
    const STREAM_TYPE: StreamType;
    /// Version of the serialized state, bumped whenever the state's shape changes so that stale
    /// snapshots are ignored rather than misread.
    const SNAPSHOT_VERSION: u32 = 1;
    type Command: Debug + Send;
    type Event: Event;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Returns the events the command produces, or a domain error. An empty vector means the
    /// command was already satisfied (an idempotent no-op).
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Never fails: events are facts.
    fn apply(&mut self, event: &Self::Event);

    /// Convenience: folds a sequence of events from the default state.
    fn replay<'a, I>(events: I) -> Self
    where
        I: IntoIterator<Item = &'a Self::Event>,
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for e in events {
            state.apply(e);
        }
        state
    }
}

/// Serializes an adjacently tagged event enum (`#[serde(tag = "event_type", content =
/// "payload")]`) and returns only its payload, the event's named fields.
///
/// Every event enum of this crate serializes to a JSON object with a `payload` member (all of
/// their variants have named fields, and their fields are plain data with string map keys), so the
/// `Null` fallback is unreachable for them; it exists only so that this helper never panics.
pub fn encode_payload<E: Serialize>(event: &E) -> serde_json::Value {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(mut tagged)) => {
            tagged.remove("payload").unwrap_or(serde_json::Value::Null)
        }
        _ => serde_json::Value::Null,
    }
}

/// [`encode_payload`] as JSON text, encoded straight from the event: serde writes an adjacently
/// tagged variant as `{"event_type":"<tag>","payload":<fields>}`, and this returns `<fields>`.
/// Falls back to encoding [`encode_payload`]'s tree should the text ever not have that shape.
pub fn encode_payload_json<E: Serialize>(event: &E, event_type: &str) -> String {
    const HEAD: &str = r#"{"event_type":""#;
    const MIDDLE: &str = r#"","payload":"#;
    if let Ok(mut text) = serde_json::to_string(event) {
        let plain = event_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let start = HEAD.len() + event_type.len() + MIDDLE.len();
        let framed = plain
            && text.len() > start
            && text.starts_with(HEAD)
            && text[HEAD.len()..].starts_with(event_type)
            && text[HEAD.len() + event_type.len()..].starts_with(MIDDLE)
            && text.ends_with('}');
        if framed {
            text.pop();
            text.drain(..start);
            return text;
        }
    }
    encode_payload(event).to_string()
}

/// Rebuilds an adjacently tagged event enum from its stored name and a payload already in the
/// current shape (upcast first).
///
/// A payload that does not fit is reported as [`DecodeError::Malformed`] with `version` 0, because
/// this helper does not know the stored version: callers set it with [`DecodeError::with_version`].
pub fn decode_tagged<E: DeserializeOwned>(
    event_type: &str,
    payload: serde_json::Value,
) -> Result<E, DecodeError> {
    let tagged = serde_json::json!({ "event_type": event_type, "payload": payload });
    serde_json::from_value(tagged).map_err(|e| DecodeError::Malformed {
        event_type: event_type.to_owned(),
        version: 0,
        reason: e.to_string(),
    })
}

/// Checks a stored version against the current version of an event type: versions 1 to
/// `current` are readable (older ones are upcast by the caller), anything else is unsupported.
pub fn check_version(event_type: &str, version: u32, current: u32) -> Result<(), DecodeError> {
    if (1..=current).contains(&version) {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion {
            event_type: event_type.to_owned(),
            version,
        })
    }
}

impl DecodeError {
    /// Sets the stored version on a `Malformed` error; other variants are returned unchanged.
    #[must_use]
    pub fn with_version(self, stored_version: u32) -> Self {
        match self {
            DecodeError::Malformed {
                event_type, reason, ..
            } => DecodeError::Malformed {
                event_type,
                version: stored_version,
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    #[serde(tag = "event_type", content = "payload")]
    enum Tagged {
        Moved { to: String, by: u32 },
    }

    #[derive(Serialize)]
    struct Untagged {
        payload: u32,
    }

    #[test]
    fn payload_json_is_the_payload_without_the_tag() {
        let event = Tagged::Moved {
            to: "\"quoted\" ✓".into(),
            by: 3,
        };
        let text = encode_payload_json(&event, "Moved");
        assert_eq!(text, r#"{"to":"\"quoted\" ✓","by":3}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            encode_payload(&event)
        );
    }

    #[test]
    fn payload_json_falls_back_when_the_text_is_not_framed_as_expected() {
        // Wrong tag given: the framing check fails and the tree path answers.
        let event = Tagged::Moved {
            to: "x".into(),
            by: 1,
        };
        let text = encode_payload_json(&event, "Other");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"to": "x", "by": 1})
        );
        // Not an adjacently tagged enum at all.
        assert_eq!(encode_payload_json(&Untagged { payload: 7 }, "Moved"), "7");
    }
}
