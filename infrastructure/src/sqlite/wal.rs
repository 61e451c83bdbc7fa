//! Keeping a SQLite WAL short under steady load.
//!
//! SQLite rewinds the WAL only when a write transaction begins while every frame has been copied
//! into the database file and no reader still uses one. Under a steady stream of commits and
//! reads that moment never comes by itself: each checkpoint ends behind the writer, and some
//! reader always holds a snapshot. The WAL then grows without bound. Under the HTTP benchmark
//! the event store's grew by ~70 MB/s and the read models' by ~55 MB/s. Each commit then appends
//! to newly allocated blocks, and its fsync must also persist the allocation and the new size.
//!
//! [`restart_wal`] runs a RESTART checkpoint on a writer connection between two transactions.
//! It copies the frames not yet in the database file, syncs that file, and then waits briefly
//! for readers that started before to finish. Readers that start meanwhile read the database
//! file and do not hold it up. The next transaction then writes the WAL from its start.

use rusqlite::Connection;
use std::time::Duration;

/// How long a restart waits, in total, for readers that still use the WAL.
const RESTART_WAIT: Duration = Duration::from_millis(2);
const RESTART_WAIT_STEP: Duration = Duration::from_micros(50);

/// The busy handler of a restart: polls every [`RESTART_WAIT_STEP`] for [`RESTART_WAIT`].
fn brief_wait(attempt: i32) -> bool {
    let steps = RESTART_WAIT.as_micros() / RESTART_WAIT_STEP.as_micros();
    if u128::try_from(attempt).unwrap_or(0) >= steps {
        return false;
    }
    std::thread::sleep(RESTART_WAIT_STEP);
    true
}

/// Runs a RESTART checkpoint on `conn`, the file's writer connection, outside any transaction.
/// Returns whether the next transaction will write the WAL from its start.
///
/// Frames are only rewound once they are in the database file, so a crash at any point loses
/// nothing. When old readers outlast the wait, the frames are still copied. The WAL then keeps
/// growing until the next attempt. `busy_timeout` is the connection's usual timeout, restored
/// afterwards.
pub(crate) fn restart_wal(conn: &Connection, busy_timeout: Duration) -> bool {
    if let Err(e) = conn.busy_handler(Some(brief_wait)) {
        tracing::warn!(error = %e, "could not set a busy handler for a WAL restart");
        return false;
    }
    // (busy, frames in the WAL, frames copied): busy is 1 when readers held the restart up.
    let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    if let Err(e) = conn.busy_timeout(busy_timeout) {
        tracing::error!(error = %e, "could not restore the busy timeout after a WAL restart");
    }
    match result {
        Ok((busy, wal_frames, copied)) => {
            tracing::trace!(busy, wal_frames, copied, "sqlite WAL restart");
            busy == 0
        }
        Err(e) => {
            tracing::debug!(error = %e, "sqlite WAL restart did not happen");
            false
        }
    }
}

/// How often, and how far apart, [`truncate_wal`] tries to get past readers.
const TRUNCATE_ATTEMPTS: u32 = 50;
const TRUNCATE_PAUSE: Duration = Duration::from_millis(20);

/// Copies every WAL frame into the database file and truncates the WAL to nothing, retrying for
/// about a second while readers still use it. After an erasure this leaves no older page image
/// anywhere (`secure_delete` zeroed what the erasure freed in the file). Returns whether it got
/// past the readers.
pub(crate) fn truncate_wal(conn: &Connection) -> Result<bool, rusqlite::Error> {
    for _ in 0..TRUNCATE_ATTEMPTS {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(true);
        }
        std::thread::sleep(TRUNCATE_PAUSE);
    }
    Ok(false)
}
