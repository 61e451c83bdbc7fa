//! A minimal `Vec`-backed [`EventStore`] for projection tests: a feed in push order, per-stream
//! reads, and a plain optimistic `append`.

use async_trait::async_trait;
use commands::{
    AppendOutcome, Commit, CommitResult, EventEnvelope, EventStore, FeedCursor, Idempotency,
    LoadedStream, StoreError, StreamRef, StreamVersion,
};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub struct VecEventStore {
    events: Mutex<Vec<EventEnvelope>>,
    notify: Arc<tokio::sync::Notify>,
}

impl VecEventStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `events` in feed order (positions 1, 2, ...).
    pub fn with_events(events: impl IntoIterator<Item = EventEnvelope>) -> Self {
        let store = Self::new();
        for e in events {
            store.push(e);
        }
        store
    }

    fn lock(&self) -> Result<MutexGuard<'_, Vec<EventEnvelope>>, StoreError> {
        self.events
            .lock()
            .map_err(|_| StoreError::Internal("vec event store lock poisoned".into()))
    }

    /// Appends an already built envelope at the end of the feed (its sequence is trusted) and
    /// returns its position.
    pub fn push(&self, mut event: EventEnvelope) -> u64 {
        // A poisoned lock only happens after a panic in another test thread; recover the data.
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let position = events.len() as u64 + 1;
        event.global_position = Some(position);
        events.push(event);
        self.notify.notify_waiters();
        position
    }

    /// Every stored event in feed order.
    pub fn all(&self) -> Vec<EventEnvelope> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn version_of(events: &[EventEnvelope], stream: &StreamRef) -> u64 {
    events
        .iter()
        .filter(|e| e.stream_type == stream.stream_type && e.stream_id == stream.stream_id)
        .map(|e| e.sequence)
        .max()
        .unwrap_or(0)
}

#[async_trait]
impl EventStore for VecEventStore {
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, StoreError> {
        let mut events = self.lock()?;
        for s in &commit.streams {
            let actual = version_of(&events, &s.stream);
            if actual != s.expected_version {
                return Err(StoreError::Conflict {
                    stream: s.stream.clone(),
                    expected: s.expected_version,
                    actual: Some(actual),
                });
            }
        }
        let mut versions = Vec::new();
        for s in commit.streams {
            let mut seq = s.expected_version;
            for e in s.events {
                seq += 1;
                let position = events.len() as u64 + 1;
                events.push(EventEnvelope {
                    global_position: Some(position),
                    event_id: e.event_id,
                    stream_type: s.stream.stream_type,
                    stream_id: s.stream.stream_id.clone(),
                    sequence: seq,
                    event_type: e.event_type,
                    event_version: e.event_version,
                    occurred_at: e.occurred_at,
                    payload: e.payload,
                    metadata: e.metadata,
                });
            }
            versions.push(StreamVersion {
                stream: s.stream,
                version: seq,
            });
        }
        let position = events.len() as u64;
        drop(events);
        self.notify.notify_waiters();
        Ok(AppendOutcome::Committed(CommitResult {
            position: Some(position),
            streams: versions,
            committed_at: chrono::Utc::now(),
        }))
    }

    async fn load(&self, stream: &StreamRef) -> Result<LoadedStream, StoreError> {
        let events: Vec<EventEnvelope> = self
            .lock()?
            .iter()
            .filter(|e| e.stream_type == stream.stream_type && e.stream_id == stream.stream_id)
            .cloned()
            .collect();
        let version = events.iter().map(|e| e.sequence).max().unwrap_or(0);
        Ok(LoadedStream {
            snapshot: None,
            events,
            version,
        })
    }

    async fn read(
        &self,
        stream: &StreamRef,
        versions: RangeInclusive<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events: Vec<EventEnvelope> = self
            .lock()?
            .iter()
            .filter(|e| {
                e.stream_type == stream.stream_type
                    && e.stream_id == stream.stream_id
                    && versions.contains(&e.sequence)
            })
            .cloned()
            .collect();
        events.sort_by_key(|e| e.sequence);
        Ok(events)
    }

    async fn feed(
        &self,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let events = self.lock()?;
        let start = usize::try_from(after.position(0))
            .unwrap_or(usize::MAX)
            .min(events.len());
        Ok(events[start..].iter().take(limit).cloned().collect())
    }

    async fn head(&self) -> Result<FeedCursor, StoreError> {
        Ok(FeedCursor::at(self.lock()?.len() as u64))
    }

    async fn idempotency(
        &self,
        _command_id: &str,
    ) -> Result<Option<(CommitResult, Idempotency)>, StoreError> {
        Ok(None)
    }

    fn commit_notifier(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.notify.clone())
    }
}
