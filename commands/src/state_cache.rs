//! The command service's cache of aggregate states.
//!
//! Deciding a command needs the current state of every stream it touches. Loading it means a
//! snapshot read, a tail read and a fold, on every command. The cache keeps the state and the
//! stream version of recently used streams, in memory, bounded (LRU).
//!
//! It is optimistic and can never make a wrong decision stick:
//!
//! - A command decided on a cached state appends with the cached version as its expected version,
//!   so if the stream moved on (another process, another instance of the service), the append
//!   fails with a conflict. Every stream of a commit that did not go through is evicted, and the
//!   retry loads it fresh.
//! - A command *rejected* on a cached state (not found, invalid, a business rule) is decided once
//!   more on freshly loaded states before the rejection is returned, so a stale cache can never
//!   turn a valid command into an error.
//! - Only commands run through [`crate::CommandService::run`] read the cache. A plain
//!   [`crate::CommandService::load`] (queries, answers) always reads the store.
//! - An entry only ever moves forward: a slow load of version 5 never replaces a commit's
//!   version 6.

use crate::store::StreamRef;
use hashlink::LruCache;
use std::any::Any;
use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard};

/// A cached state, type-erased (the service is generic over aggregates).
pub(crate) type AnyState = Arc<dyn Any + Send + Sync>;

struct Entry {
    version: u64,
    state: AnyState,
}

/// A bounded map from stream to (version, state).
pub(crate) struct StateCache {
    entries: Mutex<LruCache<StreamRef, Entry>>,
}

impl StateCache {
    /// A cache of at most `capacity` streams; `None` when `capacity` is 0 (caching off).
    pub(crate) fn new(capacity: usize) -> Option<Self> {
        (capacity > 0).then(|| Self {
            entries: Mutex::new(LruCache::new(capacity)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<StreamRef, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written; keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state and version of `stream`, if it holds an `A`.
    pub(crate) fn get<A: Send + Sync + 'static>(
        &self,
        stream: &StreamRef,
    ) -> Option<(Arc<A>, u64)> {
        let mut entries = self.lock();
        let entry = entries.get(stream)?;
        let state = entry.state.clone().downcast::<A>().ok()?;
        Some((state, entry.version))
    }

    /// Records `state` at `version`, unless the cache already holds a later version.
    pub(crate) fn put(&self, stream: &StreamRef, version: u64, state: AnyState) {
        let mut entries = self.lock();
        let replaced = match entries.get_mut(stream) {
            Some(existing) if existing.version <= version => {
                Some(std::mem::replace(existing, Entry { version, state }))
            }
            Some(_) => None,
            None => entries.insert(stream.clone(), Entry { version, state }),
        };
        // A replaced state is freed after the lock is released: freeing a big
        // aggregate must not hold up the other commands.
        drop(entries);
        drop(replaced);
    }

    pub(crate) fn evict(&self, stream: &StreamRef) {
        self.lock().remove(stream);
    }

    #[cfg(test)]
    pub(crate) fn version(&self, stream: &StreamRef) -> Option<u64> {
        self.lock().peek(stream).map(|e| e.version)
    }
}

/// How the loads of one attempt of [`crate::CommandService::run`] may use the cache.
pub(crate) struct AttemptScope {
    pub(crate) use_cache: bool,
    pub(crate) hits: Cell<u32>,
}

tokio::task_local! {
    pub(crate) static ATTEMPT: AttemptScope;
}

/// Whether the current task is inside an attempt that may read the cache.
pub(crate) fn cache_allowed() -> bool {
    ATTEMPT.try_with(|a| a.use_cache).unwrap_or(false)
}

/// Counts a cache hit against the current attempt.
pub(crate) fn record_hit() {
    let _ = ATTEMPT.try_with(|a| a.hits.set(a.hits.get().saturating_add(1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::StreamType;

    fn stream(id: &str) -> StreamRef {
        StreamRef::new(StreamType::Cart, id)
    }

    #[test]
    fn entries_only_move_forward_and_are_typed() {
        let cache = StateCache::new(4).expect("enabled");
        cache.put(&stream("a"), 6, Arc::new(6u32));
        cache.put(&stream("a"), 5, Arc::new(5u32));
        assert_eq!(cache.get::<u32>(&stream("a")), Some((Arc::new(6), 6)));
        assert_eq!(cache.get::<String>(&stream("a")), None);
        cache.put(&stream("a"), 7, Arc::new(7u32));
        assert_eq!(cache.get::<u32>(&stream("a")), Some((Arc::new(7), 7)));
        cache.evict(&stream("a"));
        assert_eq!(cache.get::<u32>(&stream("a")), None);
    }

    #[test]
    fn the_least_recently_used_stream_is_dropped_first() {
        let cache = StateCache::new(2).expect("enabled");
        cache.put(&stream("a"), 1, Arc::new(1u32));
        cache.put(&stream("b"), 1, Arc::new(2u32));
        assert!(cache.get::<u32>(&stream("a")).is_some());
        cache.put(&stream("c"), 1, Arc::new(3u32));
        assert_eq!(cache.version(&stream("b")), None);
        assert_eq!(cache.version(&stream("a")), Some(1));
        assert_eq!(cache.version(&stream("c")), Some(1));
        assert!(StateCache::new(0).is_none());
    }
}
