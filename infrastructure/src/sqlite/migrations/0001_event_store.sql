-- The event store: events, the latest snapshot per stream, and idempotency records.
-- `global_position` is the rowid, so it is the durable feed order: with one writer, rows are
-- inserted in commit order and a position is never reused (events are never deleted).
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL UNIQUE,
    stream_type     TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    sequence        INTEGER NOT NULL CHECK (sequence >= 1),
    event_type      TEXT    NOT NULL,
    event_version   INTEGER NOT NULL,
    -- RFC 3339, UTC, fixed nanosecond precision, so text order is time order.
    occurred_at     TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    UNIQUE (stream_type, stream_id, sequence)
);

-- Only the latest snapshot of each stream is kept; older ones are superseded in place.
CREATE TABLE snapshots (
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
) WITHOUT ROWID;

CREATE TABLE idempotency (
    command_id  TEXT NOT NULL PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    -- The first commit's `CommitResult` as JSON, returned on every replay.
    result      TEXT NOT NULL
) WITHOUT ROWID;
