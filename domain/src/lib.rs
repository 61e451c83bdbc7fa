//! Pure domain of the order backbone: aggregates, commands, events and value types.
//!
//! Nothing in this crate performs I/O, reads a clock or draws random numbers: everything from the
//! outside world (prices, timestamps, ids) arrives inside commands. The aggregates (`Cart`, `Order`,
//! `Payment`, `Product`, `Notification`, `Customer`) implement cqrs-es's `Aggregate` (their one contract: `handle`
//! calls each one's pure, synchronous `decide`) and [`EventSourced`] (the stream type and snapshot
//! version the store needs); their events implement cqrs-es's `DomainEvent` and [`Event`], both
//! declared once per enum with [`domain_events!`](aggregate).

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cart;
pub mod customer;
pub mod ids;
pub mod money;
pub mod notification;
pub mod order;
pub mod payment;
pub mod personal;
pub mod product;
pub mod quantity;
mod text;

pub use aggregate::*;
pub use cart::*;
pub use customer::*;
pub use ids::*;
pub use money::*;
pub use notification::*;
pub use order::*;
pub use payment::*;
pub use personal::*;
pub use product::*;
pub use quantity::*;

/// Every stored event name of the backbone in one place.
///
/// Each aggregate module has its own `event_names` module; this one gathers them so that
/// `domain::event_names::ORDER_PLACED` works and the glob re-exports above do not clash.
pub mod event_names {
    pub use crate::cart::event_names::*;
    pub use crate::customer::event_names::*;
    pub use crate::notification::event_names::*;
    pub use crate::order::event_names::*;
    pub use crate::payment::event_names::*;
    pub use crate::product::event_names::*;
}
