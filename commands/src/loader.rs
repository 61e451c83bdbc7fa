//! The loader port: the current state of one stream, for the command service to decide on.
//!
//! [`StoreLoader`] reads the event store (latest snapshot plus the events after it) and folds.
//! Speed lives in decorators chosen at composition (`api/src/compose.rs`), each behind this same
//! port:
//!
//! - [`CachingLoader`] keeps recently decided states in memory (LRU) and says so
//!   ([`LoadedState::remembered`]), so the service never returns a rejection decided on a
//!   remembered state without deciding again on a fresh one;
//! - [`LockingLoader`] queues the commands of this process that decide on the same hot stream
//!   (a flash sale on one product) instead of letting them conflict and retry.
//!
//! Neither decorator is needed for correctness: every append carries the expected version of
//! every stream it decided on, so a stale state or a missing lock only costs a retry.

use crate::error::CommandError;
use crate::store::{EventEnvelope, EventStore, LoadedStream, StreamRef};
use async_trait::async_trait;
use domain::{Event, EventSourced};
use hashlink::LruCache;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A state of any aggregate type, shared (the loader is not generic over aggregates).
pub type AnyState = Arc<dyn Any + Send + Sync>;

/// How a caller will use what it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// A command will decide on it and append to the stream: a remembered state is fine (the
    /// append checks the version) and hot streams may be locked.
    Decide,
    /// A command reads it without appending to it (a price, an owner check): a remembered state
    /// is fine, no lock is taken.
    Read,
    /// A query or an answer outside a command: always the store's current state.
    Latest,
}

/// Folds a stream as loaded from the store into an aggregate state. `None` when the snapshot
/// cannot be used (the loader then reads every event and folds again).
pub type Fold = fn(&StreamRef, LoadedStream) -> Result<Option<(AnyState, u64)>, CommandError>;

/// What a caller asks a loader for: one stream, the fold of its aggregate type, and how the
/// caller will use the state.
#[derive(Clone, Copy)]
pub struct LoadRequest<'a> {
    pub stream: &'a StreamRef,
    pub fold: Fold,
    pub intent: Intent,
}

impl<'a> LoadRequest<'a> {
    /// Asks for `stream` as aggregate `A`, folded with [`fold`].
    pub fn of<A: EventSourced>(stream: &'a StreamRef, intent: Intent) -> Self {
        Self {
            stream,
            fold: fold::<A>,
            intent,
        }
    }
}

/// One stream's state at a version.
pub struct LoadedState {
    pub state: AnyState,
    pub version: u64,
    /// Whether the state came from memory rather than the store (it may be behind the store).
    pub remembered: bool,
    /// Whatever the loader holds for the caller until its commit is answered (a stream lock).
    pub guard: Option<Box<dyn Any + Send>>,
}

/// What a commit did to one stream, for loaders that remember states.
pub enum Committed {
    /// The stream is now at `version` with `state`.
    At { version: u64, state: AnyState },
    /// What the stream holds is unknown (a conflict, a failure, a duplicate command).
    Unknown,
}

#[async_trait]
pub trait Loader: Send + Sync + 'static {
    async fn load(&self, request: LoadRequest<'_>) -> Result<LoadedState, CommandError>;

    /// Called once an append has been answered, for every stream it held.
    fn committed(&self, _streams: &[(StreamRef, Committed)]) {}
}

/// The fold of aggregate `A`: the snapshot (when its shape is current) plus the events after it.
pub fn fold<A: EventSourced>(
    stream: &StreamRef,
    loaded: LoadedStream,
) -> Result<Option<(AnyState, u64)>, CommandError> {
    let (mut state, mut version) = match loaded.snapshot {
        Some(s) if s.schema_version == A::SNAPSHOT_VERSION => {
            match serde_json::from_value::<A>(s.state) {
                Ok(state) => (state, s.version),
                Err(err) => {
                    tracing::warn!(%stream, error = %err, "unreadable snapshot, replaying the stream");
                    return Ok(None);
                }
            }
        }
        Some(_) => return Ok(None),
        None => (A::default(), 0),
    };
    for e in loaded.events {
        if e.sequence <= version {
            continue;
        }
        version = e.sequence;
        cqrs_es::Aggregate::apply(&mut state, decode::<A::Event>(stream, &e)?);
    }
    Ok(Some((Arc::new(state), version.max(loaded.version))))
}

fn decode<E: Event>(stream: &StreamRef, e: &EventEnvelope) -> Result<E, CommandError> {
    e.payload
        .decode_event::<E>(&e.event_type, e.event_version)
        .map_err(|err| CommandError::Internal(format!("undecodable event in {stream}: {err}")))
}

/// Loads from the event store.
pub struct StoreLoader {
    store: Arc<dyn EventStore>,
}

impl StoreLoader {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Loader for StoreLoader {
    #[tracing::instrument(skip_all, fields(stream = %request.stream), err)]
    async fn load(&self, request: LoadRequest<'_>) -> Result<LoadedState, CommandError> {
        let LoadRequest { stream, fold, .. } = request;
        let loaded = self.store.load(stream).await?;
        let (state, version) = match fold(stream, loaded)? {
            Some(folded) => folded,
            None => {
                // The snapshot is stale or unreadable: replay every event.
                let events = self.store.read(stream, 1..=u64::MAX).await?;
                let all = LoadedStream {
                    snapshot: None,
                    version: events.last().map_or(0, |e| e.sequence),
                    events,
                };
                fold(stream, all)?.ok_or_else(|| {
                    CommandError::Internal(format!("{stream} does not fold without a snapshot"))
                })?
            }
        };
        Ok(LoadedState {
            state,
            version,
            remembered: false,
            guard: None,
        })
    }
}

/// Remembers the states commits reach, in memory and bounded (LRU), and serves them to commands.
///
/// It can never make a wrong decision stick: a command decided on a remembered state appends
/// with the remembered version, so if the stream moved on (another process) the append conflicts,
/// the stream is forgotten and the retry loads it fresh; and a state it serves is marked
/// `remembered`, so the service decides a rejection again on fresh states before returning it.
/// An entry only moves forward: a slow load of version 5 never replaces a commit's version 6.
pub struct CachingLoader {
    inner: Arc<dyn Loader>,
    entries: Mutex<LruCache<StreamRef, (u64, AnyState)>>,
}

impl CachingLoader {
    pub fn new(inner: Arc<dyn Loader>, capacity: usize) -> Self {
        Self {
            inner,
            entries: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    fn entries(&self) -> MutexGuard<'_, LruCache<StreamRef, (u64, AnyState)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, stream: &StreamRef, version: u64, state: AnyState) {
        let mut entries = self.entries();
        let replaced = match entries.get_mut(stream) {
            Some(existing) if existing.0 <= version => {
                Some(std::mem::replace(existing, (version, state)))
            }
            Some(_) => None,
            None => entries.insert(stream.clone(), (version, state)),
        };
        drop(entries);
        // A state is dropped outside the lock.
        drop(replaced);
    }
}

#[async_trait]
impl Loader for CachingLoader {
    async fn load(&self, request: LoadRequest<'_>) -> Result<LoadedState, CommandError> {
        if request.intent != Intent::Latest {
            let hit = self.entries().get(request.stream).cloned();
            if let Some((version, state)) = hit {
                return Ok(LoadedState {
                    state,
                    version,
                    remembered: true,
                    guard: None,
                });
            }
        }
        let loaded = self.inner.load(request).await?;
        self.remember(request.stream, loaded.version, loaded.state.clone());
        Ok(loaded)
    }

    fn committed(&self, streams: &[(StreamRef, Committed)]) {
        for (stream, outcome) in streams {
            match outcome {
                Committed::At { version, state } => self.remember(stream, *version, state.clone()),
                Committed::Unknown => {
                    self.entries().remove(stream);
                }
            }
        }
        self.inner.committed(streams);
    }
}

/// Takes an in-process lock on every stream of the chosen types that a command decides on, and
/// holds it until the command's commit is answered.
///
/// Commands that decide on several locked streams must load them in ascending order (checkout
/// loads its products in product-id order), or two of them could wait on each other.
pub struct LockingLoader {
    inner: Arc<dyn Loader>,
    locked: Vec<domain::StreamType>,
    locks: Mutex<HashMap<StreamRef, Weak<tokio::sync::Mutex<()>>>>,
}

impl LockingLoader {
    pub fn new(inner: Arc<dyn Loader>, locked: Vec<domain::StreamType>) -> Self {
        Self {
            inner,
            locked,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_of(&self, stream: &StreamRef) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 4096 {
            locks.retain(|_, l| l.strong_count() > 0);
        }
        match locks.get(stream).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(stream.clone(), Arc::downgrade(&lock));
                lock
            }
        }
    }
}

#[async_trait]
impl Loader for LockingLoader {
    async fn load(&self, request: LoadRequest<'_>) -> Result<LoadedState, CommandError> {
        let stream = request.stream;
        if request.intent != Intent::Decide || !self.locked.contains(&stream.stream_type) {
            return self.inner.load(request).await;
        }
        let guard = self.lock_of(stream).lock_owned().await;
        let mut loaded = self.inner.load(request).await?;
        loaded.guard = Some(Box::new(guard));
        Ok(loaded)
    }

    fn committed(&self, streams: &[(StreamRef, Committed)]) {
        self.inner.committed(streams);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::StreamType;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// An inner loader that answers `(loads so far, version)` for every stream and counts loads.
    #[derive(Default)]
    struct Counting {
        loads: AtomicU64,
        version: AtomicU64,
    }

    #[async_trait]
    impl Loader for Counting {
        async fn load(&self, _request: LoadRequest<'_>) -> Result<LoadedState, CommandError> {
            let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(LoadedState {
                state: Arc::new(n),
                version: self.version.load(Ordering::SeqCst),
                remembered: false,
                guard: None,
            })
        }
    }

    fn no_fold(_: &StreamRef, _: LoadedStream) -> Result<Option<(AnyState, u64)>, CommandError> {
        Ok(None)
    }

    fn stream(id: &str) -> StreamRef {
        StreamRef::new(StreamType::Cart, id)
    }

    fn value(loaded: &LoadedState) -> u64 {
        *loaded.state.clone().downcast::<u64>().expect("u64 state")
    }

    async fn load(loader: &dyn Loader, id: &str, intent: Intent) -> LoadedState {
        let request = LoadRequest {
            stream: &stream(id),
            fold: no_fold,
            intent,
        };
        loader.load(request).await.expect("load")
    }

    #[tokio::test]
    async fn the_cache_serves_what_a_commit_reached_and_says_it_is_remembered() {
        let inner = Arc::new(Counting::default());
        let cache = CachingLoader::new(inner.clone(), 8);
        let first = load(&cache, "a", Intent::Decide).await;
        assert!(!first.remembered);
        cache.committed(&[(
            stream("a"),
            Committed::At {
                version: 3,
                state: Arc::new(42u64),
            },
        )]);
        let hit = load(&cache, "a", Intent::Read).await;
        assert!(hit.remembered);
        assert_eq!((value(&hit), hit.version), (42, 3));
        assert_eq!(inner.loads.load(Ordering::SeqCst), 1);
        // Queries always read through.
        let latest = load(&cache, "a", Intent::Latest).await;
        assert!(!latest.remembered);
        assert_eq!(inner.loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_only_move_forward_and_unknown_outcomes_forget() {
        let inner = Arc::new(Counting::default());
        let cache = CachingLoader::new(inner.clone(), 8);
        let at = |version: u64, state: u64| Committed::At {
            version,
            state: Arc::new(state),
        };
        cache.committed(&[(stream("a"), at(6, 6))]);
        cache.committed(&[(stream("a"), at(5, 5))]);
        // A slow load of an older version does not replace a newer entry either.
        inner.version.store(4, Ordering::SeqCst);
        load(&cache, "a", Intent::Latest).await;
        let hit = load(&cache, "a", Intent::Decide).await;
        assert_eq!((value(&hit), hit.version), (6, 6));
        cache.committed(&[(stream("a"), Committed::Unknown)]);
        let reloaded = load(&cache, "a", Intent::Decide).await;
        assert!(!reloaded.remembered);
        assert_eq!(reloaded.version, 4);
    }

    #[tokio::test]
    async fn the_least_recently_used_stream_is_dropped_first() {
        let inner = Arc::new(Counting::default());
        let cache = CachingLoader::new(inner.clone(), 2);
        for id in ["a", "b"] {
            load(&cache, id, Intent::Decide).await;
        }
        assert!(load(&cache, "a", Intent::Decide).await.remembered);
        load(&cache, "c", Intent::Decide).await;
        assert!(!load(&cache, "b", Intent::Decide).await.remembered);
        assert!(load(&cache, "c", Intent::Decide).await.remembered);
    }

    #[tokio::test]
    async fn a_locked_stream_waits_for_the_holder_to_let_go() {
        let inner = Arc::new(Counting::default());
        let locks = Arc::new(LockingLoader::new(inner, vec![StreamType::Cart]));
        let held = load(locks.as_ref(), "hot", Intent::Decide).await;
        assert!(held.guard.is_some());
        // Reads and other streams do not wait.
        assert!(load(locks.as_ref(), "hot", Intent::Read)
            .await
            .guard
            .is_none());
        assert!(load(locks.as_ref(), "cold", Intent::Decide)
            .await
            .guard
            .is_some());
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { load(locks.as_ref(), "hot", Intent::Decide).await.version })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the second decider got the lock while it was held"
        );
        drop(held);
        let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(done, Ok(Ok(0))), "{done:?}");
    }

    #[tokio::test]
    async fn only_the_chosen_stream_types_are_locked() {
        let inner = Arc::new(Counting::default());
        let locks = LockingLoader::new(inner, vec![StreamType::Product]);
        let loaded = load(&locks, "cart", Intent::Decide).await;
        assert!(loaded.guard.is_none());
    }
}
