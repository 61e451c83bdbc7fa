//! [`Payload`]: an event's payload as the JSON text it is stored as, parsed only when read.
//!
//! An event is encoded once, where it is decided, straight from its typed form to text. The
//! store writes that text, the in-memory feed tail and every consumer share it (a clone is a
//! reference count), and a reader that needs the JSON tree parses it once, on first use.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// An event payload: valid JSON text plus, once someone asked for it, its parsed tree.
///
/// Serializes as the JSON it holds (not as a string), so envelopes keep their wire format.
/// Equality compares the JSON values, not the texts.
#[derive(Clone)]
pub struct Payload(Arc<Inner>);

struct Inner {
    text: Box<RawValue>,
    value: OnceLock<Value>,
}

impl Payload {
    /// Wraps JSON text; fails when it is not one valid JSON value.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        Ok(Self::from_raw(RawValue::from_string(text)?))
    }

    /// Encodes a value as a payload.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::from_raw(serde_json::value::to_raw_value(value)?))
    }

    /// The payload of a domain event: [`domain::Event::payload_json`], the one encoding.
    pub fn of_event<E: domain::Event>(event: &E) -> Self {
        let text = event.payload_json();
        // `payload_json` always writes one JSON value; `null` only satisfies the types.
        Self::from_json(text).unwrap_or_else(|_| Self::from(Value::Null))
    }

    /// Decodes a domain event stored as `event_type` at `event_version` from this payload,
    /// upcasting older versions ([`domain::Event::decode`]).
    pub fn decode_event<E: domain::Event>(
        &self,
        event_type: &str,
        event_version: u32,
    ) -> Result<E, domain::DecodeError> {
        E::decode(event_type, event_version, self.json())
    }

    fn from_raw(text: Box<RawValue>) -> Self {
        Self(Arc::new(Inner {
            text,
            value: OnceLock::new(),
        }))
    }

    /// The JSON text, exactly as stored.
    pub fn json(&self) -> &str {
        self.0.text.get()
    }

    /// The parsed JSON, parsed on the first call and kept.
    pub fn value(&self) -> &Value {
        self.0.value.get_or_init(|| {
            // Valid JSON by construction (`RawValue` checked it), so this cannot fail.
            serde_json::from_str(self.0.text.get()).unwrap_or(Value::Null)
        })
    }

    /// The parsed JSON as an owned tree: the kept tree's copy, or a fresh parse that is not
    /// kept (for a reader that consumes the tree, such as an event decoder).
    pub fn to_value(&self) -> Value {
        match self.0.value.get() {
            Some(value) => value.clone(),
            None => serde_json::from_str(self.json()).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        // Encoding a `Value` cannot fail (its map keys are strings); `null` only satisfies the
        // types.
        let text =
            serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned());
        let cell = OnceLock::new();
        let _ = cell.set(value);
        Self(Arc::new(Inner { text, value: cell }))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || self.json() == other.json()
            || self.value() == other.value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.text.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_as_the_json_it_holds_and_reads_back() {
        let payload = Payload::from(json!({"q": 2, "s": "✓", "big": 9_007_199_254_740_993_u64}));
        let text = serde_json::to_string(&json!({ "payload": payload })).unwrap();
        assert_eq!(
            text,
            r#"{"payload":{"big":9007199254740993,"q":2,"s":"✓"}}"#
        );
        let back: Value = serde_json::from_str(&text).unwrap();
        let again: Payload = serde_json::from_value(back["payload"].clone()).unwrap();
        assert_eq!(again, payload);
        assert_eq!(again.value()["big"], json!(9_007_199_254_740_993_u64));
    }

    #[test]
    fn rejects_text_that_is_not_json() {
        assert!(Payload::from_json("{\"a\":".to_owned()).is_err());
        assert!(Payload::from_json("1 2".to_owned()).is_err());
        assert_eq!(Payload::from_json(" [1] ".to_owned()).unwrap(), json!([1]));
    }

    #[test]
    fn equality_is_on_values_not_texts() {
        let a = Payload::from_json(r#"{"a":1,"b":2}"#.to_owned()).unwrap();
        let b = Payload::from_json(r#"{ "b": 2, "a": 1 }"#.to_owned()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Payload::from(json!({"a": 1})));
    }

    #[test]
    fn a_domain_event_encodes_to_its_payload() {
        let event = domain::CartEvent::CartOpened {
            cart_id: domain::CartId::parse("cart-1").unwrap(),
            customer_id: domain::CustomerId::parse("c-1").unwrap(),
        };
        let payload = Payload::of_event(&event);
        assert_eq!(
            payload.json(),
            r#"{"cart_id":"cart-1","customer_id":"c-1"}"#
        );
        let decoded: domain::CartEvent = payload.decode_event("CartOpened", 1).unwrap();
        assert_eq!(decoded, event);
        assert!(payload
            .decode_event::<domain::CartEvent>("ItemAdded", 1)
            .is_err());
        assert!(payload
            .decode_event::<domain::CartEvent>("Cart\"Opened", 1)
            .is_err());
    }

    #[test]
    fn decode_event_reads_current_versions_from_text_and_upcasts_old_ones() {
        use domain::{DecodeError, ProductEvent};
        // ProductCreated v1 had no category; v2 (current) upcasts it to "uncategorized".
        let v1 = Payload::from(json!({
            "product_id": "p1", "name": "Teapot",
            "price": {"amount": "24.00", "currency": "EUR"}, "on_hand": 5
        }));
        let upcast: ProductEvent = v1.decode_event("ProductCreated", 1).unwrap();
        assert!(matches!(
            &upcast,
            ProductEvent::ProductCreated { category, .. } if category == "uncategorized"
        ));
        let current = Payload::of_event(&upcast);
        let again: ProductEvent = current.decode_event("ProductCreated", 2).unwrap();
        assert_eq!(again, upcast);
        // A v2 payload without its new field is malformed, with the stored version.
        assert!(matches!(
            v1.decode_event::<ProductEvent>("ProductCreated", 2),
            Err(DecodeError::Malformed { version: 2, .. })
        ));
        assert!(matches!(
            current.decode_event::<ProductEvent>("ProductCreated", 3),
            Err(DecodeError::UnsupportedVersion { version: 3, .. })
        ));
        assert!(matches!(
            current.decode_event::<ProductEvent>("ProductExploded", 1),
            Err(DecodeError::UnknownType { .. })
        ));
    }
}
