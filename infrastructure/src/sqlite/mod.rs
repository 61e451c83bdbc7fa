//! The embedded SQLite adapters.
//!
//! [`SqliteEventStore`] implements the [`commands::EventStore`] port on one SQLite file: WAL
//! mode, `synchronous=FULL` by default, embedded migrations applied at open, one writer thread
//! that batches concurrent commits into one transaction (group commit, one savepoint per commit
//! so each caller gets its own outcome), and pooled read connections. It passes the shared
//! conformance suite in `commands::conformance`.

mod codec;
mod migrations;
mod recent;
mod store;
mod writer;

pub use store::{SqliteEventStore, SqliteOptions, Synchronous, WriteStats};
