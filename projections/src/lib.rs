#![forbid(unsafe_code)]
//! Read models of the order backbone and the logic that keeps them up to date.
//!
//! - [`store`]: the read-model store port ([`ReadModelStore`], the transaction port [`DocTx`],
//!   [`Projection`]) and the duplicate / gap / apply loop every adapter shares.
//! - [`docs`]: typed documents over [`DocTx`] (`update_doc`, `peek_doc`, `put_doc`).
//! - [`runner`]: checkpoints, gap filling and rebuilds on top of the event-store port.
//! - [`catalog`], [`order_history`], [`notifications`], [`support`]: the four read models, each
//!   with typed views and the query functions the API calls.
//!
//! Projections only consume domain events; they never re-run business rules, using the derived
//! values the events carry instead.

pub mod catalog;
mod describe;
pub use describe::DisputeView;
pub mod docs;
mod erasure;
pub mod generations;
pub mod notifications;
pub mod order_history;
pub mod paging;
pub mod runner;
pub mod store;
pub mod support;
mod util;

#[cfg(any(test, feature = "testsuite"))]
pub mod memory;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use generations::{GenerationRouter, Generations};
pub use paging::Page;
pub use runner::{
    rebuild_all, ApplySummary, ProjectionRunner, RebuildSummary, RunnerError, StepOutcome,
};
pub use store::{
    reflects, ApplyOutcome, DocTx, Document, EncodedDoc, IndexEntry, Projection, ProjectionError,
    Query, ReadModelError, ReadModelStore,
};

#[cfg(any(test, feature = "testsuite"))]
pub use memory::MemoryReadModelStore;

use std::sync::Arc;

/// The four read models, in a stable order.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(catalog::CatalogProjection),
        Arc::new(order_history::OrderHistoryProjection),
        Arc::new(notifications::NotificationsProjection),
        Arc::new(support::SupportProjection),
    ]
}
