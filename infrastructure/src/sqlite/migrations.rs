//! Embedded schema migrations, applied in order when the store opens.
//!
//! Versions are recorded per component in `schema_migrations` rather than in
//! `PRAGMA user_version`, because the embedded deployment keeps the read models in the same
//! SQLite file and they version their own schema independently.

use super::codec::sql_error;
use commands::StoreError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The component name under which the event store records its schema version.
pub(crate) const COMPONENT: &str = "event_store";

/// Each step runs once, in its own transaction; append new steps, never edit applied ones.
const STEPS: &[&str] = &[include_str!("migrations/0001_event_store.sql")];

/// Brings the schema up to date and returns the resulting version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             component  TEXT    NOT NULL PRIMARY KEY,
             version    INTEGER NOT NULL,
             applied_at TEXT    NOT NULL
         ) WITHOUT ROWID;",
    )
    .map_err(sql_error)?;
    let latest = STEPS.len() as u32;
    // IMMEDIATE: two processes opening a fresh file at once must not both run a step.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let current: u32 = tx
        .query_row(
            "SELECT version FROM schema_migrations WHERE component = ?1",
            [COMPONENT],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql_error)?
        .unwrap_or(0);
    if current > latest {
        return Err(StoreError::Internal(format!(
            "the event store schema is at version {current}, newer than this build ({latest})"
        )));
    }
    for (i, step) in STEPS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(step).map_err(sql_error)?;
        let version = i as u32 + 1;
        tx.execute(
            "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (component) DO UPDATE SET version = excluded.version,
                                                   applied_at = excluded.applied_at",
            params![COMPONENT, version, chrono::Utc::now().to_rfc3339()],
        )
        .map_err(sql_error)?;
        tracing::info!(component = COMPONENT, version, "applied sqlite migration");
    }
    tx.commit().map_err(sql_error)?;
    Ok(latest)
}
