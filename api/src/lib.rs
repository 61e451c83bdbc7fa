#![forbid(unsafe_code)]
//! The HTTP API of the order backbone and the composition root of the embedded default.
//!
//! - [`compose`]: builds the stores, the shop, the workers ([`start_embedded`]).
//! - [`compose_aws`]: the same on DynamoDB, Streams, EventBridge and SQS ([`compose_aws::start_aws`]).
//! - [`router::app`]: the axum router (testable without a socket) over the handlers in
//!   [`routes`]; [`openapi`] documents them.
//! - [`serve`]: serving with graceful shutdown; [`ops`]: the operations listener.
//! - [`error::ApiError`]: the one mapping from failures to HTTP.

pub mod auth;
pub mod compose;
pub mod compose_aws;
pub mod console;
pub mod emf;
pub mod error;
pub mod export;
pub mod extract;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod ops;
pub mod payments;
pub mod read_models;
pub mod router;
pub mod routes;
pub mod schema;
pub mod seed;
pub mod serve;
pub mod state;
pub mod telemetry;
pub mod time_travel;
pub mod webhooks;

pub use compose::{start_embedded, ApiSettings, Embedded, EmbeddedConfig};
pub use router::app;
pub use serve::{serve, serve_until};
pub use state::AppState;
