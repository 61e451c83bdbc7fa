//! The embedded SQLite adapters.
//!
//! [`SqliteEventStore`] implements the [`commands::EventStore`] port on one SQLite file: WAL
//! mode, durable acknowledgements by default (the WAL is synced before a commit is answered),
//! embedded migrations applied at open, one writer thread that batches concurrent commits into
//! one transaction (group commit: each caller gets its own outcome) while a syncer thread makes
//! the previous groups durable, and pooled read connections. It passes the shared
//! conformance suite in `commands::conformance`.

mod codec;
mod migrations;
mod recent;
mod store;
mod writer;

pub use store::{SqliteEventStore, SqliteOptions, Synchronous, WriteStats};
