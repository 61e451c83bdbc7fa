//! The tail of the feed, kept in memory.
//!
//! Every commit wakes every feed consumer (projections, process managers, workers), and each of
//! them reads the events it has not seen yet: the newest few. Reading them back from SQLite means
//! a query and a JSON decode per consumer and event. The writer already holds those events, so
//! after each group commit it moves them into this ring (before it publishes the new head), and
//! `feed` serves any page that starts inside the ring from memory.
//!
//! The ring holds exactly the events this store committed since it was opened, in position
//! order and without gaps (one process owns the file, and positions are the `events` rowid,
//! given out in insert order by the one writer). A page starting before the oldest event kept
//! falls back to SQLite.

use commands::FeedCursor;
use commands::{AppendOutcome, Commit, EventEnvelope, EventFilter, FilteredPage, StoreError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) struct RecentFeed {
    capacity: usize,
    ring: Mutex<Ring>,
}

struct Ring {
    /// The position of `events[0]` (or of the next event, when empty).
    first: u64,
    events: VecDeque<Arc<EventEnvelope>>,
}

impl RecentFeed {
    /// A ring of at most `capacity` events, the next of which will have position `head + 1`.
    pub(crate) fn new(capacity: usize, head: u64) -> Self {
        Self {
            capacity,
            ring: Mutex::new(Ring {
                first: head + 1,
                events: VecDeque::with_capacity(capacity.min(4096)),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Pushes keep the ring consistent at every step; a poisoned lock is still usable.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the events of the committed commits of one group, in position order. Returns the
    /// events that left the ring, so the caller chooses when to pay for freeing them.
    #[must_use = "the evicted events are freed when the returned vector is dropped"]
    pub(crate) fn push(&self, events: Vec<EventEnvelope>) -> Vec<Arc<EventEnvelope>> {
        let mut evicted = Vec::new();
        if self.capacity == 0 || events.is_empty() {
            return evicted;
        }
        let mut ring = self.lock();
        for event in events {
            let Some(position) = event.global_position else {
                continue;
            };
            if position != ring.first + ring.events.len() as u64 {
                // Never expected; keep the ring gapless by starting it over.
                tracing::warn!(
                    position,
                    expected = ring.first + ring.events.len() as u64,
                    "feed positions out of order; restarting the in-memory feed tail"
                );
                ring.events.clear();
                ring.first = position;
            }
            ring.events.push_back(Arc::new(event));
            if ring.events.len() > self.capacity {
                evicted.extend(ring.events.pop_front());
                ring.first += 1;
            }
        }
        evicted
    }

    /// The first `limit` events after `after`, or `None` when the ring does not reach back that
    /// far (the caller reads SQLite instead).
    pub(crate) fn page(&self, after: u64, limit: usize) -> Option<Vec<EventEnvelope>> {
        let shared = self.shared(after, limit)?;
        // The deep copies are made outside the lock, so the writer never waits on a reader.
        Some(shared.iter().map(|e| EventEnvelope::clone(e)).collect())
    }

    /// Like [`RecentFeed::page`], copying only the events `keep` accepts.
    pub(crate) fn page_filtered(
        &self,
        after: u64,
        limit: usize,
        keep: &EventFilter<'_>,
    ) -> Option<FilteredPage> {
        let shared = self.shared(after, limit)?;
        Some(FilteredPage {
            next: shared
                .last()
                .and_then(|e| e.global_position)
                .map(FeedCursor::at),
            read: shared.len(),
            events: shared
                .iter()
                .filter(|e| keep(e))
                .map(|e| EventEnvelope::clone(e))
                .collect(),
        })
    }

    fn shared(&self, after: u64, limit: usize) -> Option<Vec<Arc<EventEnvelope>>> {
        let ring = self.lock();
        if self.capacity == 0 || after.saturating_add(1) < ring.first {
            return None;
        }
        let start = usize::try_from(after + 1 - ring.first).unwrap_or(usize::MAX);
        Some(
            ring.events
                .iter()
                .skip(start)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

/// The envelopes of a committed commit, as a read would return them: positions run up to the
/// commit's last position, sequences from each stream's expected version.
pub(crate) fn committed_envelopes(
    commit: Commit,
    outcome: &Result<AppendOutcome, StoreError>,
    out: &mut Vec<EventEnvelope>,
) {
    let Ok(AppendOutcome::Committed(result)) = outcome else {
        return;
    };
    let Some(last) = result.position else {
        return;
    };
    let count = commit.event_count() as u64;
    let mut position = (last + 1).saturating_sub(count);
    for part in commit.streams {
        for (sequence, event) in (part.expected_version + 1..).zip(part.events) {
            out.push(EventEnvelope {
                global_position: Some(position),
                event_id: event.event_id,
                stream_type: part.stream.stream_type,
                stream_id: part.stream.stream_id.clone(),
                sequence,
                event_type: event.event_type,
                event_version: event.event_version,
                occurred_at: event.occurred_at,
                payload: event.payload,
                metadata: event.metadata,
            });
            position += 1;
        }
    }
}
