//! Which stored fields hold a person's data, declared once.
//!
//! The event store encrypts these fields with the data key of the customer named by `subject`
//! before it writes them, and shows them in their erased form once that key is deleted
//! (`commands::pii`). Everything else (ids, amounts, statuses, lines) stays in clear, so the books
//! still add up after an erasure.
//!
//! The erased form is one documented shape: every personal text reads [`ERASED`], and optional
//! parts of a personal value (an address's second line) read `null`.

use crate::aggregate::StreamType;
use crate::order::{event_names, ShippingAddress};

/// What a personal text reads once its owner's data was erased.
pub const ERASED: &str = "[erased]";

/// How a personal field reads once erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasedAs {
    /// A text: [`ERASED`].
    Text,
    /// A [`ShippingAddress`] whose texts read [`ERASED`] and whose second line is `null`.
    Address,
}

impl ErasedAs {
    pub fn value(self) -> serde_json::Value {
        match self {
            ErasedAs::Text => serde_json::Value::String(ERASED.to_owned()),
            ErasedAs::Address => serde_json::json!(ShippingAddress {
                name: ERASED.to_owned(),
                line1: ERASED.to_owned(),
                line2: None,
                city: ERASED.to_owned(),
                postal_code: ERASED.to_owned(),
                country: ERASED.to_owned(),
            }),
        }
    }
}

/// One personal field of a stored JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalField {
    pub name: &'static str,
    pub erased_as: ErasedAs,
}

/// Where a stored shape keeps personal data: the fields, and the field naming their owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalData {
    pub stream: StreamType,
    /// The event type, or `None` for the stream's snapshot state.
    pub event_type: Option<&'static str>,
    /// The field that holds the owner's customer id (in clear).
    pub subject: &'static str,
    pub fields: &'static [PersonalField],
}

const ORDER_FIELDS: &[PersonalField] = &[
    PersonalField {
        name: "customer_email",
        erased_as: ErasedAs::Text,
    },
    PersonalField {
        name: "shipping_address",
        erased_as: ErasedAs::Address,
    },
];

/// Every stored shape that holds personal data, or introduces its owner. `OrderPlaced` is the
/// only event with personal fields (cart, payment, product and notification events carry ids and
/// amounts only); an order's snapshot holds the same fields in its state. `CartOpened` has none,
/// but it is a customer's first event: their data key is created with it, so that checkout finds
/// the key ready.
pub const PERSONAL_DATA: &[PersonalData] = &[
    PersonalData {
        stream: StreamType::Cart,
        event_type: Some(crate::cart::event_names::CART_OPENED),
        subject: "customer_id",
        fields: &[],
    },
    PersonalData {
        stream: StreamType::Order,
        event_type: Some(event_names::ORDER_PLACED),
        subject: "customer_id",
        fields: ORDER_FIELDS,
    },
    PersonalData {
        stream: StreamType::Order,
        event_type: None,
        subject: "customer_id",
        fields: ORDER_FIELDS,
    },
];

/// The personal fields of events of `event_type` on `stream`, if they have any.
pub fn personal_event(stream: StreamType, event_type: &str) -> Option<&'static PersonalData> {
    PERSONAL_DATA
        .iter()
        .find(|d| d.stream == stream && d.event_type == Some(event_type))
}

/// The personal fields of `stream`'s snapshot state, if it has any.
pub fn personal_snapshot(stream: StreamType) -> Option<&'static PersonalData> {
    PERSONAL_DATA
        .iter()
        .find(|d| d.stream == stream && d.event_type.is_none())
}
