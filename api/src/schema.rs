//! Wire types shared by several handlers and the OpenAPI document, so that neither imports the
//! other for them: the constrained strings requests carry, the error answers, and the envelope
//! of command answers, each declared once.
//!
//! The values the inner crates serialize describe themselves: their `openapi` feature (turned on
//! by this crate) derives their schemas, under the component names this API publishes
//! (`MoneySchema`, `OrderSchema`, ...).

use std::collections::BTreeMap;

use domain::{Currency, StreamType};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

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
    CartReply(commands::CartView);
    /// A command's acknowledgement, with `consistency` and `position`.
    AckReply(commands::Ack);
    /// An erasure's receipt, with `consistency` and `position`.
    ErasureReply(commands::ErasureReceipt);
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
