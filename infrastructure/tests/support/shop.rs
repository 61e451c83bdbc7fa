//! What the command-level suites share: the context their commands run under and the checkout
//! details their orders are placed with. Include it with
//! `#[path = "support/shop.rs"] mod shop;`.
// Each suite uses part of it.
#![allow(dead_code)]

use commands::{CheckoutInput, CommandContext, Metadata};
use domain::ShippingAddress;

/// A command context with `correlation_id` and no idempotency key.
pub fn context(correlation_id: &str) -> CommandContext {
    CommandContext {
        metadata: Metadata {
            correlation_id: correlation_id.into(),
            ..Metadata::default()
        },
        idempotency: None,
    }
}

/// Ada's email and a valid GB shipping address.
pub fn checkout_input() -> CheckoutInput {
    CheckoutInput {
        customer_email: "ada@example.com".into(),
        shipping_address: ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: None,
            city: "London".into(),
            postal_code: "N1 1AA".into(),
            country: "GB".into(),
        },
    }
}
