//! Validated identifiers: 1 to 64 characters of `[A-Za-z0-9_-]`, so that they are safe as storage
//! keys, URL path segments and log fields without escaping.

use std::fmt;
use std::sync::Arc;

/// Longest accepted identifier, in characters.
pub const MAX_ID_LEN: usize = 64;

/// An identifier that failed validation; `kind` names which one (`"order"`, `"cart"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: expected 1 to 64 characters of letters, digits, '-' or '_'")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
}

/// Whether `s` is a valid identifier of any kind (1 to 64 characters of `[A-Za-z0-9_-]`).
pub fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Shared, immutable text: a clone (aggregate state, views, envelopes) is a reference
        /// count, not an allocation.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps an identifier.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_valid_id(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(IdError { kind: $kind, value: s.to_owned() })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(s: String) -> Result<Self, IdError> {
                if is_valid_id(&s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(IdError { kind: $kind, value: s })
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} id", $kind)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a cart stream.
    CartId,
    "cart"
);
id_type!(
    /// Identifies an order stream.
    OrderId,
    "order"
);
id_type!(
    /// Identifies a payment stream (one payment per order).
    PaymentId,
    "payment"
);
id_type!(
    /// Identifies a product stream.
    ProductId,
    "product"
);
id_type!(
    /// Identifies a notification stream: the id of the event that called for the message.
    NotificationId,
    "notification"
);
id_type!(
    /// Identifies a customer; customers are not a stream of this backbone.
    CustomerId,
    "customer"
);
