//! Wire types shared by several handlers and the OpenAPI document, so that neither imports the
//! other for them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
