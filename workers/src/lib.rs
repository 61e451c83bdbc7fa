#![forbid(unsafe_code)]
//! Long-running loops with graceful shutdown. Each worker is a loop over one `step`, backing off
//! when idle or failing, and stopping on a cancellation token.

pub mod delivery;
pub mod expiry;
pub mod feed;
pub mod health;
pub mod payments;
pub mod queue;
pub mod rebuild;
pub mod relay;

pub use delivery::{
    compose, spawn_delivery, Deliveries, DeliveryWorker, DELIVERY_BATCH, DELIVERY_CONCURRENCY,
    DELIVERY_WORKER,
};
pub use expiry::{spawn_expiry, ExpirySweeper, Sweep, DEFAULT_ORDER_TTL, EXPIRY_WORKER};
pub use feed::*;
pub use health::*;
pub use queue::*;
pub use rebuild::*;
pub use relay::*;
pub use tokio_util::sync::CancellationToken;
