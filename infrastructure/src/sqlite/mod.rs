//! The embedded SQLite adapters, one file each under the data directory.
//!
//! - [`SqliteEventStore`] implements the [`commands::EventStore`] port: WAL mode,
//!   `synchronous=FULL` by default, embedded migrations applied at open, one writer thread that
//!   batches concurrent commits into one transaction (group commit, each caller still gets its
//!   own outcome; see `writer`), and pooled read connections. It passes the shared conformance
//!   suite in `commands::conformance`.
//! - [`SqliteReadModelStore`] implements the [`projections::ReadModelStore`] port: documents,
//!   index entries, applied sequences and checkpoints in their own file. It passes the
//!   projections' conformance suite.
//! - [`SqliteCheckpointStore`] implements [`commands::CheckpointStore`] for the process managers.
//! - [`SqliteKeyStore`] implements [`commands::KeyStore`]: the customers' data keys, in the event
//!   store's file.
//!
//! The event store and the read models keep their WAL short under steady load the same way
//! (`wal`).

mod blocking;
mod checkpoints;
mod codec;
mod keys;
mod migrations;
mod readmodel;
mod recent;
mod store;
mod wal;
mod writer;

pub use checkpoints::SqliteCheckpointStore;
pub use keys::SqliteKeyStore;
pub use readmodel::SqliteReadModelStore;
pub use store::{SqliteEventStore, SqliteOptions, Synchronous, WriteStats};

/// The position a cursor stands at in the embedded feed, which has one partition; `None` for a
/// cursor of a partitioned feed (or one past what SQLite's integers hold), which no embedded
/// reader can have got from this feed.
pub(crate) fn embedded_position(cursor: &commands::FeedCursor) -> Option<i64> {
    match cursor.positions() {
        [] => Some(0),
        [p] => i64::try_from(*p).ok(),
        _ => None,
    }
}
