//! Stripe: the gateway adapter, webhook verification and parsing, and a payment lookup over the
//! support read model.
//!
//! What the composition root wires:
//!
//! - [`gateway::StripeGateway`] as the `PaymentGateway` when `STRIPE_SECRET_KEY` is set;
//! - [`webhook::WebhookVerifier`] with the configured webhook secret(s) for
//!   `POST /v1/webhooks/stripe`, whose verified [`webhook::StripeEvent`] converts into the
//!   application's `commands::ProviderEvent` for `commands::Payments::apply`;
//! - [`lookup::ReadModelPaymentLookup`] as the `PaymentLookup` (charge and dispute events only
//!   name the PaymentIntent).

pub mod gateway;
pub mod lookup;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
pub mod webhook;

pub use gateway::{SecretKey, StripeConfig, StripeConfigError, StripeGateway, DEFAULT_BASE_URL};
pub use lookup::ReadModelPaymentLookup;
#[cfg(any(test, feature = "testsuite"))]
pub use webhook::sign_for_test;
pub use webhook::{
    parse_verified, ParsedWith, StripeEvent, StripeFact, WebhookConfigError, WebhookError,
    WebhookSecret, WebhookVerifier, DEFAULT_TOLERANCE, SIGNATURE_HEADER,
};
