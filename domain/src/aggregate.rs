//! The aggregate contract: cqrs-es's `Aggregate` and `DomainEvent`, plus what a stored stream
//! needs besides (its stream type, explicit event names and versions, one way to encode events).

use crate::text::named_enum;
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StrDeserializer};
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess};
use serde::Serialize;
use std::fmt::Debug;

named_enum! {
    /// The stream types of the backbone. The string form is stored in every envelope.
    #[derive(
        Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
    )]
    #[cfg_attr(
        feature = "openapi",
        derive(utoipa::ToSchema),
        schema(as = StreamTypeName, rename_all = "snake_case")
    )]
    pub enum StreamType {
        Cart = "cart",
        Order = "order",
        Payment = "payment",
        Product = "product",
        Notification = "notification",
        Customer = "customer",
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
/// Every event enum of the domain gets this trait, and cqrs-es's `DomainEvent`, from
/// [`domain_events!`]: the stored names and versions are written once there, as constants.
/// Events are stored as serde's adjacently tagged form without its frame: the name and version go
/// into the envelope, the variant's named fields are the payload.
///
/// Contract: `event_type()` never derives from a Rust identifier; `decode(event_type(),
/// event_version(), &payload_json())` returns an equal event; `decode` accepts every older version
/// it has ever written and upcasts it to the current shape.
pub trait Event: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync {
    /// The stable stored name, for example "OrderPlaced".
    fn event_type(&self) -> &'static str;
    /// The current schema version of this event's type.
    fn event_version(&self) -> u32;
    /// The current schema version of the event type stored as `event_type`; `None` for a name
    /// this build does not know.
    fn current_version(event_type: &str) -> Option<u32>;

    /// Brings the payload of an older version to the current shape of its type. The default
    /// knows no older shapes.
    fn upcast(
        _event_type: &str,
        _version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        Ok(payload)
    }

    /// The payload as JSON text (the event's named fields, without the type tag): what the store
    /// writes.
    fn payload_json(&self) -> String {
        encode_payload_json(self, self.event_type())
    }

    /// Rebuilds an event from its stored name, version and payload text. A payload at the
    /// current version is read straight from the text; an older one is parsed, upcast, then read.
    fn decode(event_type: &str, event_version: u32, payload: &str) -> Result<Self, DecodeError> {
        let current =
            Self::current_version(event_type).ok_or_else(|| DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            })?;
        check_version(event_type, event_version, current)?;
        let malformed = |e: serde_json::Error| DecodeError::Malformed {
            event_type: event_type.to_owned(),
            version: event_version,
            reason: e.to_string(),
        };
        if event_version == current {
            return decode_tagged_text(event_type, payload).map_err(malformed);
        }
        let value = serde_json::from_str(payload).map_err(malformed)?;
        let value = Self::upcast(event_type, event_version, value)?;
        decode_tagged(event_type, value).map_err(|e| e.with_version(event_version))
    }
}

/// What a stored stream adds to cqrs-es's `Aggregate`, the aggregates' contract: the stream type
/// it is stored under and the version of its snapshot shape. Deciding is `Aggregate::handle`,
/// which calls each aggregate's pure, synchronous `decide`; folding is `Aggregate::apply`.
pub trait EventSourced:
    cqrs_es::Aggregate<
        Services = (),
        Command: Debug + Send,
        Event: Event,
        Error: Send + Sync + 'static,
    > + Clone
    + Debug
    + 'static
{
    const STREAM_TYPE: StreamType;
    /// Version of the serialized state, bumped whenever the state's shape changes so that stale
    /// snapshots are ignored rather than misread.
    const SNAPSHOT_VERSION: u32 = 1;
}

/// Declares an event enum with its stored names and versions, once:
///
/// ```text
/// domain_events! {
///     #[derive(Debug, Clone, PartialEq)]
///     pub enum CartEvent in event_names {
///         CART_OPENED = "CartOpened", version 1 => CartOpened { cart_id: CartId },
///     }
/// }
/// ```
///
/// gives the enum (serde adjacently tagged, each variant renamed to its stored name), a module
/// `event_names` with one constant per name, [`Event`] and cqrs-es's `DomainEvent`. An optional
/// `upcast = path;` after the enum names the function that brings older payloads up to date.
macro_rules! domain_events {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident in $names:ident {
            $(
                $(#[doc = $doc:literal])*
                $konst:ident = $tag:literal, version $version:expr => $variant:ident { $($fields:tt)* }
            ),* $(,)?
        }
        $(upcast = $upcast:path;)?
    ) => {
        /// Stored event names of this stream.
        pub mod $names {
            $(pub const $konst: &str = $tag;)*
        }

        $(#[$meta])*
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(tag = "event_type", content = "payload")]
        $vis enum $name {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $tag)]
                $variant { $($fields)* },
            )*
        }

        impl $crate::aggregate::Event for $name {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $names::$konst,)*
                }
            }

            fn event_version(&self) -> u32 {
                match self {
                    $(Self::$variant { .. } => $version,)*
                }
            }

            fn current_version(event_type: &str) -> Option<u32> {
                match event_type {
                    $($names::$konst => Some($version),)*
                    _ => None,
                }
            }

            $(
                fn upcast(
                    event_type: &str,
                    version: u32,
                    payload: serde_json::Value,
                ) -> Result<serde_json::Value, $crate::aggregate::DecodeError> {
                    $upcast(event_type, version, payload)
                }
            )?
        }

        impl cqrs_es::DomainEvent for $name {
            fn event_type(&self) -> String {
                $crate::aggregate::Event::event_type(self).to_owned()
            }

            fn event_version(&self) -> String {
                $crate::aggregate::Event::event_version(self).to_string()
            }
        }
    };
}
pub(crate) use domain_events;

/// Implements cqrs-es's `Aggregate` for a domain aggregate: `handle` is its pure `decide`,
/// `apply` its `evolve`. The aggregates need no services: everything from outside arrives in the
/// command.
macro_rules! aggregate {
    ($aggregate:ty, $stream:expr, $command:ty, $event:ty, $error:ty) => {
        #[async_trait::async_trait]
        impl cqrs_es::Aggregate for $aggregate {
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = ();

            fn aggregate_type() -> String {
                $stream.as_str().to_owned()
            }

            async fn handle(
                &self,
                command: $command,
                _services: &(),
            ) -> Result<Vec<$event>, $error> {
                self.decide(command)
            }

            fn apply(&mut self, event: $event) {
                self.evolve(&event);
            }
        }

        impl $crate::aggregate::EventSourced for $aggregate {
            const STREAM_TYPE: $crate::aggregate::StreamType = $stream;
        }
    };
}
pub(crate) use aggregate;

/// Encodes an adjacently tagged event enum and returns only its payload text: serde writes a
/// variant as `{"event_type":"<tag>","payload":<fields>}`, and this returns `<fields>`. Falls back
/// to taking the `payload` member of the parsed tree should the text ever not have that shape.
fn encode_payload_json<E: Serialize>(event: &E, event_type: &str) -> String {
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
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(mut tagged)) => tagged
            .remove("payload")
            .unwrap_or(serde_json::Value::Null)
            .to_string(),
        _ => "null".to_owned(),
    }
}

/// Reads an adjacently tagged event enum from its stored name and payload text, without
/// building a JSON tree or copying the text: the enum is handed a two-entry map whose tag is the
/// name and whose content is read straight from the payload.
fn decode_tagged_text<T: DeserializeOwned>(
    event_type: &str,
    payload: &str,
) -> Result<T, serde_json::Error> {
    let mut content = serde_json::Deserializer::from_str(payload);
    let value = T::deserialize(MapAccessDeserializer::new(TaggedPayload {
        event_type: Some(event_type),
        content: Some(&mut content),
    }))?;
    content.end()?;
    Ok(value)
}

/// The map `{"event_type": <name>, "payload": <payload text>}` as serde sees it.
struct TaggedPayload<'a, 'de> {
    event_type: Option<&'a str>,
    content: Option<&'a mut serde_json::Deserializer<serde_json::de::StrRead<'de>>>,
}

impl<'de> MapAccess<'de> for TaggedPayload<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = if self.event_type.is_some() {
            "event_type"
        } else if self.content.is_some() {
            "payload"
        } else {
            return Ok(None);
        };
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        if let Some(name) = self.event_type.take() {
            return seed.deserialize(StrDeserializer::new(name));
        }
        match self.content.take() {
            Some(content) => seed.deserialize(content),
            None => Err(serde::de::Error::custom("no value after the payload")),
        }
    }
}

/// Rebuilds an adjacently tagged event enum from its stored name and a payload already in the
/// current shape (upcast first).
///
/// A payload that does not fit is reported as [`DecodeError::Malformed`] with `version` 0, because
/// this helper does not know the stored version: callers set it with [`DecodeError::with_version`].
fn decode_tagged<E: DeserializeOwned>(
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
fn check_version(event_type: &str, version: u32, current: u32) -> Result<(), DecodeError> {
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

    #[derive(Serialize, serde::Deserialize)]
    #[serde(tag = "event_type", content = "payload")]
    enum Tagged {
        Moved { to: String, by: u32 },
    }

    #[derive(Serialize)]
    struct Untagged {
        payload: u32,
    }

    fn moved(to: &str, by: u32) -> Tagged {
        Tagged::Moved { to: to.into(), by }
    }

    #[test]
    fn payload_json_is_the_payload_without_the_tag() {
        let text = encode_payload_json(&moved("\"quoted\" ✓", 3), "Moved");
        assert_eq!(text, r#"{"to":"\"quoted\" ✓","by":3}"#);
        let back: Tagged = decode_tagged_text("Moved", &text).unwrap();
        assert!(matches!(back, Tagged::Moved { by: 3, .. }));
    }

    #[test]
    fn a_payload_is_read_in_place_and_must_be_whole() {
        let back: Tagged = decode_tagged_text("Moved", r#" {"by":2,"to":"\u00e9"} "#).unwrap();
        assert!(matches!(back, Tagged::Moved { by: 2, ref to } if to == "é"));
        // Trailing text, a missing field and an unknown name are refused.
        assert!(decode_tagged_text::<Tagged>("Moved", r#"{"to":"x","by":2} x"#).is_err());
        assert!(decode_tagged_text::<Tagged>("Moved", r#"{"to":"x"}"#).is_err());
        assert!(decode_tagged_text::<Tagged>("Jumped", r#"{"to":"x","by":2}"#).is_err());
    }

    #[test]
    fn payload_json_falls_back_when_the_text_is_not_framed_as_expected() {
        // Wrong tag given: the framing check fails and the tree path answers.
        let text = encode_payload_json(&moved("x", 1), "Other");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"to": "x", "by": 1})
        );
        // Not an adjacently tagged enum at all.
        assert_eq!(encode_payload_json(&Untagged { payload: 7 }, "Moved"), "7");
    }
}
