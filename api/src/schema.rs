//! Wire types shared by several handlers and the OpenAPI document, so that neither imports the
//! other for them: the documented shapes of values the inner crates serialize (they know nothing
//! of OpenAPI), the constrained strings requests carry, and the error answers, each declared once.
//!
//! The `*Schema` structs are never built: each mirrors, field for field, what a type of an inner
//! crate serializes, so that the document describes it.

use std::collections::BTreeMap;

use domain::{Currency, OrderStatus, StreamType};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

/// How money looks on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct MoneySchema {
    /// Decimal string at the currency's scale, for example `"12.50"`.
    pub amount: String,
    /// ISO-4217 code, for example `"EUR"`.
    pub currency: String,
}

/// The body of a command that takes no parameters (removing an item, shipping an order, ...).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

/// A string schema.
fn text() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String))
}

/// A string that must match `pattern`.
fn matching(pattern: &str, example: &str) -> Schema {
    text().pattern(Some(pattern)).examples([example]).into()
}

/// A string that is one of `names`.
fn one_of_names(names: impl IntoIterator<Item = &'static str>) -> Schema {
    text().enum_values(Some(names)).into()
}

/// A string of 1 to `MAX` characters that is not blank (the API trims it first).
pub fn non_blank<const MAX: usize>() -> Schema {
    text()
        .min_length(Some(1))
        .max_length(Some(MAX))
        .pattern(Some(r"\S"))
        .into()
}

/// A string of at most `MAX` characters.
pub fn at_most<const MAX: usize>() -> Schema {
    text().max_length(Some(MAX)).into()
}

/// A stock adjustment: 1 to `MAX` units up or down, never 0.
pub fn nonzero_delta<const MAX: i64>() -> Schema {
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new()
        .item(range(-MAX, -1))
        .item(range(1, MAX))
        .into()
}

/// Declares a string type of the document: its name, its schema, and its use as a value type.
macro_rules! string_schema {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T($schema)
            }
        }

        impl ToSchema for $name {}
    };
}

/// What the domain accepts as an id (`domain::is_valid_id`).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

string_schema!(
    /// An identifier: 1 to 64 characters of `[A-Za-z0-9_-]`.
    Id => matching(ID_PATTERN, "ord_123")
);

string_schema!(
    /// A read-your-writes token from a command answer: `type.id.version` per stream, joined by `~`.
    ConsistencyToken => {
        let stream = format!(
            "({})\\.[A-Za-z0-9_-]{{1,64}}\\.[1-9][0-9]{{0,17}}",
            StreamType::ALL.map(StreamType::as_str).join("|")
        );
        matching(
            &format!("^{stream}(~{stream}){{0,99}}$"),
            "order.ord_1.1~product.prd_a.7",
        )
    }
);

/// One UTF-8 character in lower-case hex: the cursors this API gives out are the hex of a
/// UTF-8 sort key.
const HEX_UTF8_CHAR: &str = "[0-7][0-9a-f]\
    |c[2-9a-f][89ab][0-9a-f]|d[0-9a-f][89ab][0-9a-f]\
    |e0[ab][0-9a-f][89ab][0-9a-f]|e[1-9a-cef][89ab][0-9a-f][89ab][0-9a-f]\
    |ed[89][0-9a-f][89ab][0-9a-f]\
    |f0[9ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]\
    |f[1-3][89ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]\
    |f48[0-9a-f][89ab][0-9a-f][89ab][0-9a-f]";

string_schema!(
    /// A list answer's `next_cursor`, opaque to clients.
    CursorToken => text()
        .max_length(Some(2_048))
        .pattern(Some(format!("^({HEX_UTF8_CHAR})+$")))
        .examples(["6573707265737323707264"])
        .into()
);

string_schema!(
    /// A client's key for a command: the same key replays the first answer.
    IdempotencyKey => text()
        .pattern(Some("^[!-~]{1,200}$"))
        .examples(["0f6c2a4e-checkout-1"])
        .into()
);

string_schema!(
    /// An order status.
    OrderStatusName => one_of_names(OrderStatus::ALL.map(OrderStatus::as_str))
);

string_schema!(
    /// A stream type.
    StreamTypeName => one_of_names(StreamType::ALL.map(StreamType::as_str))
);

string_schema!(
    /// A stream type (`order`) or one stream (`order:ord_123`).
    StreamFilterText => {
        let types = StreamType::ALL.map(StreamType::as_str).join("|");
        matching(&format!("^({types})([:#][^\\s]+)?$"), "order:ord_123")
    }
);

string_schema!(
    /// A stream version (`3`) or an RFC 3339 instant.
    VersionOrInstant => OneOfBuilder::new()
        .item(text().pattern(Some("^[0-9]{1,18}$")))
        .item(text().format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        ))))
        .into()
);

string_schema!(
    /// An e-mail address: no whitespace, something on both sides of the last `@`.
    Email => text()
        .max_length(Some(domain::MAX_EMAIL_CHARS))
        .pattern(Some(r"^\S*[^\s@]\S*@[^\s@]+$"))
        .examples(["ada@example.com"])
        .into()
);

string_schema!(
    /// A positive decimal amount, with no more decimals than the currency has (400 otherwise).
    PositiveAmount => text()
        .max_length(Some(40))
        .pattern(Some(
            r"^(0*[1-9][0-9]{0,14}(\.[0-9]{1,3})?|0{1,15}\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))$",
        ))
        .examples(["5.00"])
        .into()
);

/// The optional `Idempotency-Key` header of a command.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Replays the first answer to a request with the same key; the same key with another
    /// request is refused (422).
    #[param(rename = "Idempotency-Key", value_type = IdempotencyKey, required = false)]
    pub idempotency_key: Option<String>,
}

/// Declares the path parameters of a route, each an [`Id`].
macro_rules! id_path {
    ($($(#[$doc:meta])* $name:ident { $($(#[$field_doc:meta])* $field:ident),+ })+) => {
        $(
            $(#[$doc])*
            #[derive(IntoParams)]
            #[into_params(parameter_in = Path)]
            pub struct $name {
                $(
                    $(#[$field_doc])*
                    #[param(value_type = Id)]
                    pub $field: String,
                )+
            }
        )+
    };
}

id_path! {
    /// `/v1/carts/{id}/...`
    CartPath {
        /// The cart's id.
        id
    }
    /// `/v1/carts/{id}/items/{product_id}`
    CartItemPath {
        /// The cart's id.
        id,
        /// The product's id.
        product_id
    }
    /// `/v1/orders/{id}/...` and the staff routes on an order.
    OrderPath {
        /// The order's id.
        id
    }
    /// `/v1/admin/products/{id}/...` and `/v1/catalog/products/{id}`.
    ProductPath {
        /// The product's id.
        id
    }
    /// `/v1/payments/{payment_id}/...`
    PaymentPath {
        /// The payment's id, from checkout.
        payment_id
    }
    /// `/v1/admin/customers/{id}/...`
    CustomerPath {
        /// The customer's id (a token's `sub`).
        id
    }
    /// `/v1/support/notifications/{id}/...`
    NotificationPath {
        /// The notification's id.
        id
    }
}

/// A money amount in a request: the amount's decimals may not exceed the currency's scale, so
/// the schema has one alternative per scale.
pub fn money_input() -> Schema {
    let mut scales: BTreeMap<u32, Vec<&'static str>> = BTreeMap::new();
    for c in Currency::ALL {
        scales.entry(c.minor_units()).or_default().push(c.code());
    }
    let mut one_of = OneOfBuilder::new();
    for (scale, codes) in scales {
        let decimals = match scale {
            0 => String::new(),
            n => format!(r"(\.[0-9]{{1,{n}}})?"),
        };
        one_of = one_of.item(
            ObjectBuilder::new()
                .property(
                    "amount",
                    text().pattern(Some(format!("^[0-9]{{1,15}}{decimals}$"))),
                )
                .required("amount")
                .property("currency", one_of_names(codes))
                .required("currency")
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        );
    }
    one_of
        .examples([serde_json::json!({"amount": "12.50", "currency": "EUR"})])
        .into()
}

/// Every error status the API answers with, each declared once as a reusable response of the
/// document: its name there and its description.
pub const ERRORS: &[(u16, &str, &str)] = &[
    (400, "BadRequest", "the body is not JSON, or a parameter or field is invalid or unknown (`details.field` names it)"),
    (401, "Unauthorized", "no bearer token, or an invalid or expired one"),
    (403, "Forbidden", "the token's role may not use this operation"),
    (404, "NotFound", "no such resource (another customer's counts as none)"),
    (409, "Conflict", "refused by the resource's state (`code` says why, for example `insufficient_stock`), or it changed concurrently (`conflict`: retry)"),
    (413, "PayloadTooLarge", "the body is larger than 64 KiB"),
    (422, "IdempotencyKeyReused", "the `Idempotency-Key` was used before with another request"),
    (500, "Internal", "not done; the details are logged under the request id"),
    (501, "NotSupported", "this server does not run that part (on AWS, the queue workers own the projections)"),
    (503, "Unavailable", "a backend is temporarily unavailable: retry later"),
];

/// The reusable error responses, for the document's components.
pub fn error_responses() -> impl Iterator<Item = (&'static str, Response)> {
    ERRORS.iter().map(|(_, name, description)| {
        let response = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(crate::error::ErrorBody::name())))
                    .build(),
            )
            .build();
        (*name, response)
    })
}

/// References to the reusable error responses of `statuses`.
fn refer(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| {
            let (_, name, _) = ERRORS
                .iter()
                .find(|(s, _, _)| s == status)
                .unwrap_or_else(|| panic!("{status} is not in schema::ERRORS"));
            (
                status.to_string(),
                RefOr::Ref(Ref::from_response_name(*name)),
            )
        })
        .collect()
}

/// Declares a set of error statuses an operation lists in its `responses(...)`.
macro_rules! error_set {
    ($($(#[$doc:meta])* $name:ident: $($status:literal),+;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    refer(&[$($status),+])
                }
            }
        )+
    };
}

error_set! {
    /// Any operation: a query parameter it does not list is refused.
    QueryErrors: 400;
    /// A public read of the catalog (401 only under `--catalog-auth required`).
    PublicReadErrors: 400, 401, 503;
    /// A public read of one catalog item.
    PublicItemErrors: 400, 401, 404, 503;
    /// A read behind a token.
    ReadErrors: 400, 401, 403, 503;
    /// A read of one item behind a token.
    ItemReadErrors: 400, 401, 403, 404, 503;
    /// Asking the payment provider about a payment.
    PaymentReadErrors: 400, 401, 403, 404, 409, 503;
    /// A command that creates its resource.
    CreateErrors: 400, 401, 403, 409, 413, 422, 503;
    /// A command on an existing resource.
    CommandErrors: 400, 401, 403, 404, 409, 413, 422, 503;
    /// Reading the projections' state.
    ProjectionErrors: 400, 401, 403, 501, 503;
    /// Starting a rebuild.
    RebuildErrors: 400, 401, 403, 404, 409, 501;
    /// The Stripe webhook: a 5xx makes Stripe retry.
    WebhookErrors: 400, 413, 500, 503;
}

/// What a command answers besides its value: read-your-writes and the feed position.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitSchema {
    /// Pass as `consistency` to a read to see this write; `null` when the command changed
    /// nothing.
    #[schema(value_type = Option<ConsistencyToken>)]
    pub consistency: Option<String>,
    /// The commit's feed position, where the backend knows it at commit time (embedded).
    pub position: Option<u64>,
}

/// Declares what a command answers: its value's fields and the [`CommitSchema`] fields.
macro_rules! committed {
    ($($(#[$doc:meta])* $name:ident($value:ty);)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Serialize, ToSchema)]
            pub struct $name {
                #[serde(flatten)]
                pub value: $value,
                #[serde(flatten)]
                pub commit: $crate::schema::CommitSchema,
            }
        )+
    };
}
pub(crate) use committed;

committed! {
    /// A cart, with `consistency` and `position`.
    CartReply(CartSchema);
    /// A command's acknowledgement, with `consistency` and `position`.
    AckReply(AckSchema);
    /// An erasure's receipt, with `consistency` and `position`.
    ErasureReply(ErasureReceiptSchema);
}

/// A cart as its owner sees it (`commands::CartView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CartSchema {
    pub cart_id: String,
    pub customer_id: String,
    /// `open`, `checked_out`, ...
    pub status: String,
    pub lines: Vec<CartLineSchema>,
    /// `null` while the cart is empty.
    pub total: Option<MoneySchema>,
    /// The order placed from it, once checked out.
    pub order_id: Option<String>,
    pub version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartLineSchema {
    pub product_id: String,
    pub quantity: u32,
    pub unit_price: MoneySchema,
    pub line_total: MoneySchema,
}

/// A command's acknowledgement (`commands::Ack`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AckSchema {
    /// The resource's id.
    pub id: String,
    /// Its stream's version after the command.
    pub version: u64,
    /// Its status after the command.
    pub status: String,
}

/// What an erasure answers (`commands::ErasureReceipt`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureReceiptSchema {
    pub customer_id: String,
    /// 1 for the customer's first erasure, 2 for the next, ...
    pub erasure: u32,
    pub erased_at: chrono::DateTime<chrono::Utc>,
}

/// What a support refund answers (`commands::RefundReceipt`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundReceiptSchema {
    pub order_id: String,
    pub payment_id: String,
    /// The provider's refund id; `null` when nothing was left to refund.
    pub refund_id: Option<String>,
    /// The amount of this refund.
    pub amount: MoneySchema,
    /// `succeeded` (recorded now), `pending` (recorded when the provider confirms it by
    /// webhook), or `nothing_to_refund`.
    pub status: String,
}

/// A dispute on an order's payment (`projections::describe::DisputeView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeSchema {
    pub dispute_id: String,
    pub reason: String,
    /// The provider's status: `needs_response`, `under_review`, `won`, `lost`, ...
    pub status: String,
    /// The disputed amount, when the provider reported it.
    pub amount: Option<MoneySchema>,
    /// What the lost dispute took back from the shop; `null` unless it was lost.
    pub withdrawn: Option<MoneySchema>,
}

/// An order line (`projections::order_history::OrderLineView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderLineSchema {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: MoneySchema,
    pub line_total: MoneySchema,
}

/// A step of an order's history (`projections::order_history::TimelineEntry`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderTimelineEntrySchema {
    pub at: chrono::DateTime<chrono::Utc>,
    pub event_type: String,
    pub description: String,
}

/// An order as its customer sees it (`projections::order_history::OrderView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderSchema {
    pub order_id: String,
    pub customer_id: String,
    pub customer_email: String,
    #[schema(value_type = OrderStatusName)]
    pub status: String,
    pub lines: Vec<OrderLineSchema>,
    pub total: MoneySchema,
    pub payment_id: String,
    /// `null` until the payment's first event has been applied.
    pub payment_status: Option<String>,
    pub intent_id: Option<String>,
    pub paid: Option<MoneySchema>,
    /// Cumulative refunded amount.
    pub refunded: Option<MoneySchema>,
    pub tracking: Option<String>,
    /// The latest state of a dispute on the payment, if one was ever opened.
    pub dispute: Option<DisputeSchema>,
    pub placed_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Oldest first.
    pub timeline: Vec<OrderTimelineEntrySchema>,
}

/// A notification to a customer (`projections::notifications::NotificationView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationSchema {
    /// The id of the event that caused the notification.
    #[schema(value_type = String, example = "0190a5c2-7d1e-7c3a-9f00-4b1d2e3f4a5b")]
    pub notification_id: uuid::Uuid,
    pub customer_id: String,
    /// Where to send it (the order's customer email).
    pub email: String,
    pub order_id: String,
    /// `order_confirmed`, `payment_failed`, ...
    pub kind: String,
    pub subject: String,
    pub body: String,
    /// `pending`, `retrying`, `delivered`, `failed`, ...
    pub delivery_status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Attempts to send it so far.
    pub attempts: u32,
    /// When the next attempt is due, while it is pending or retrying.
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// The channel that delivered it.
    pub channel: Option<String>,
    /// The provider's id for the message.
    pub message_id: Option<String>,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    pub failed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Set when the customer's personal data was erased before it was delivered.
    pub cancelled_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An order as support sees it (`projections::support::SupportOrderView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SupportOrderSchema {
    pub order_id: String,
    pub customer_id: String,
    pub email: String,
    #[schema(value_type = OrderStatusName)]
    pub status: String,
    pub payment_status: Option<String>,
    pub intent_id: Option<String>,
    /// The provider's charge id, once the payment's success named it.
    pub charge_id: Option<String>,
    pub dispute: Option<DisputeSchema>,
    pub total: MoneySchema,
    /// Messages to the customer about this order that could not be delivered.
    pub failed_notifications: u32,
    pub placed_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A step of an order's support timeline (`projections::support::SupportTimelineEntry`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SupportTimelineEntrySchema {
    pub at: chrono::DateTime<chrono::Utc>,
    /// `order`, `payment` or `notification`.
    pub source: String,
    pub event_type: String,
    pub summary: String,
}

/// A product as the storefront sees it (`projections::catalog::ProductView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductSchema {
    pub product_id: String,
    pub name: String,
    pub category: String,
    pub description: String,
    pub price: MoneySchema,
    pub on_hand: u32,
    pub reserved: u32,
    pub available: u32,
    /// `active` or `retired`.
    pub status: String,
    /// The product stream's version.
    pub version: u64,
}

/// A category with products on sale (`projections::catalog::CategoryView`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CategorySchema {
    pub category: String,
    /// How many of its products are on sale.
    pub products: u32,
}

/// Who caused an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorSchema {
    pub subject: String,
    pub role: String,
}

/// Envelope metadata (`commands::Metadata`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventMetadataSchema {
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: ActorSchema,
    pub request_id: Option<String>,
    pub command_id: Option<String>,
    /// The W3C `traceparent` of the request that caused it (absent from older events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A stored event (`commands::EventEnvelope`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventEnvelopeSchema {
    /// Position in the global feed, where the backend knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_position: Option<u64>,
    #[schema(value_type = String, example = "0190a5c2-7d1e-7c3a-9f00-4b1d2e3f4a5b")]
    pub event_id: uuid::Uuid,
    #[schema(value_type = StreamTypeName)]
    pub stream_type: String,
    pub stream_id: String,
    /// Per stream, from 1, no gaps.
    pub sequence: u64,
    pub event_type: String,
    pub event_version: u32,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// The event's fields, as `event_type` at `event_version` defines them (DESIGN.md).
    pub payload: BTreeMap<String, serde_json::Value>,
    pub metadata: EventMetadataSchema,
}

/// The shape of `/openapi.json` (the OpenAPI 3.1 object).
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenApiSchema {
    /// `3.1.0`.
    pub openapi: String,
    pub info: BTreeMap<String, serde_json::Value>,
    pub paths: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    pub components: Option<BTreeMap<String, serde_json::Value>>,
}
