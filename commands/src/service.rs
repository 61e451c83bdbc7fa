//! The command service: load the streams a command touches, decide with the pure domain, append
//! with expected versions, and retry on conflict.

use crate::error::{CommandError, Rejection};
use crate::ports::Clock;
use crate::state_cache::{self, AnyState, AttemptScope, StateCache, ATTEMPT};
use crate::store::{
    AppendOutcome, Commit, CommitResult, EventStore, Idempotency, Metadata, NewEvent, Snapshot,
    StoreError, StreamAppend, StreamRef,
};
use crate::Payload;
use domain::{Event, EventSourced};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;
use uuid::Uuid;

/// Tuning for the command service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How many times a command is decided before a version conflict is surfaced.
    pub max_attempts: u32,
    /// A snapshot is written whenever a stream's version crosses a multiple of this.
    pub snapshot_every: u64,
    /// Base delay of the jittered backoff between conflict retries.
    pub retry_base: Duration,
    /// How many aggregate states the service keeps in memory between commands (LRU); 0 turns
    /// the cache off. See [`crate::state_cache`] for why a stale entry never decides wrong.
    pub state_cache: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            snapshot_every: 100,
            retry_base: Duration::from_millis(2),
            state_cache: 10_000,
        }
    }
}

/// The caller's idempotency key and a digest of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub command_id: String,
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// Builds a key whose fingerprint is the SHA-256 of `request`.
    pub fn new(command_id: impl Into<String>, request: &[u8]) -> Self {
        use sha2::Digest;
        Self {
            command_id: command_id.into(),
            fingerprint: hex::encode(sha2::Sha256::digest(request)),
        }
    }
}

/// Who, why and under which key a command runs.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    pub metadata: Metadata,
    pub idempotency: Option<IdempotencyKey>,
}

impl CommandContext {
    /// A context for a step caused by another event (process managers).
    pub fn caused_by(event: &crate::store::EventEnvelope, step: &str) -> Self {
        let mut metadata = event.metadata.clone();
        metadata.causation_id = Some(event.event_id.to_string());
        metadata.command_id = Some(format!("pm:{step}:{}", event.event_id));
        metadata.request_id = None;
        Self {
            idempotency: Some(IdempotencyKey {
                command_id: format!("pm:{step}:{}", event.event_id),
                fingerprint: String::new(),
            }),
            metadata,
        }
    }
}

/// An aggregate as loaded: its state and the stream version it reflects.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub id: String,
    /// Shared with the state cache: loading a cached state copies nothing.
    pub state: Arc<A>,
    pub version: u64,
}

/// The result of a command: what it returned, and where its commit landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executed<T> {
    pub value: T,
    pub commit: Option<CommitResult>,
    /// True when the answer is the replay of an earlier command with the same key.
    pub replayed: bool,
}

impl<T> Executed<T> {
    /// The highest feed position the command wrote, when known.
    pub fn position(&self) -> Option<u64> {
        self.commit.as_ref().and_then(|c| c.position)
    }
}

/// Accumulates the appends of one decision, possibly across several streams.
#[derive(Default)]
pub struct Decision {
    appends: Vec<StreamAppend>,
    /// The state each stream reaches if the commit goes through (for the state cache).
    states: Vec<(StreamRef, AnyState)>,
    /// Stream locks taken while deciding, released once the commit is answered.
    held: Vec<StreamLock>,
}

/// An in-process lock on one stream (see [`CommandService::lock_stream`]).
pub struct StreamLock {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Decision {
    /// Keeps `lock` until this decision's commit has been answered.
    pub fn hold(&mut self, lock: StreamLock) {
        self.held.push(lock);
    }
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("appends", &self.appends)
            .finish_non_exhaustive()
    }
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
    }
}

/// Turns commands into atomic commits.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    cache: Option<StateCache>,
    locks: std::sync::Mutex<HashMap<StreamRef, Weak<tokio::sync::Mutex<()>>>>,
}

impl CommandService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, config: ServiceConfig) -> Self {
        Self {
            cache: StateCache::new(config.state_cache),
            locks: std::sync::Mutex::new(HashMap::new()),
            store,
            clock,
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Waits for an in-process lock on `stream`. Commands that take locks on several streams
    /// must take them in ascending order (checkout locks its products in product-id order).
    ///
    /// Only an optimisation for hot streams: deciding and committing under the lock means
    /// concurrent commands of this process on the stream queue up instead of conflicting and
    /// retrying (a flash sale on one product). Correctness never depends on it: another process,
    /// or a command that takes no lock, still meets the optimistic version check.
    pub async fn lock_stream(&self, stream: StreamRef) -> StreamLock {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > 4096 {
                locks.retain(|_, l| l.strong_count() > 0);
            }
            match locks.get(&stream).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(stream, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        StreamLock {
            _guard: lock.lock_owned().await,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Loads an aggregate: the latest usable snapshot plus the events after it.
    ///
    /// Inside an attempt of [`CommandService::run`] the state may come from the state cache;
    /// anywhere else it is always read from the store.
    pub async fn load<A: EventSourced>(&self, id: &str) -> Result<Loaded<A>, CommandError> {
        let Some(cache) = &self.cache else {
            return self.load_from_store(id).await;
        };
        let stream = StreamRef::new(A::STREAM_TYPE, id);
        if state_cache::cache_allowed() {
            if let Some((state, version)) = cache.get::<A>(&stream) {
                state_cache::record_hit();
                return Ok(Loaded {
                    id: id.to_string(),
                    state,
                    version,
                });
            }
        }
        let loaded = self.load_from_store::<A>(id).await?;
        cache.put(&stream, loaded.version, loaded.state.clone());
        Ok(loaded)
    }

    #[tracing::instrument(skip_all, fields(stream_type = %A::STREAM_TYPE, stream_id = %id), err)]
    async fn load_from_store<A: EventSourced>(&self, id: &str) -> Result<Loaded<A>, CommandError> {
        let stream = StreamRef::new(A::STREAM_TYPE, id);
        let loaded = self.store.load(&stream).await?;
        let (mut state, mut version) = match loaded.snapshot {
            Some(s) if s.schema_version == A::SNAPSHOT_VERSION => {
                match serde_json::from_value::<A>(s.state) {
                    Ok(state) => (state, s.version),
                    Err(err) => {
                        tracing::warn!(%stream, error = %err, "unreadable snapshot, replaying the stream");
                        return self.load_full(id).await;
                    }
                }
            }
            Some(_) => return self.load_full(id).await,
            None => (A::default(), 0),
        };
        for e in &loaded.events {
            if e.sequence <= version {
                continue;
            }
            let event = e
                .payload
                .decode_event::<A::Event>(&e.event_type, e.event_version)
                .map_err(|err| {
                    CommandError::Internal(format!("undecodable event in {stream}: {err}"))
                })?;
            state.apply(&event);
            version = e.sequence;
        }
        Ok(Loaded {
            id: id.to_string(),
            state: Arc::new(state),
            version: version.max(loaded.version),
        })
    }

    /// Loads by replaying every event, ignoring snapshots (used when a snapshot is stale).
    async fn load_full<A: EventSourced>(&self, id: &str) -> Result<Loaded<A>, CommandError> {
        let stream = StreamRef::new(A::STREAM_TYPE, id);
        let events = self.store.read(&stream, 1, u64::MAX).await?;
        let mut state = A::default();
        let mut version = 0;
        for e in &events {
            let event = e
                .payload
                .decode_event::<A::Event>(&e.event_type, e.event_version)
                .map_err(|err| {
                    CommandError::Internal(format!("undecodable event in {stream}: {err}"))
                })?;
            state.apply(&event);
            version = e.sequence;
        }
        Ok(Loaded {
            id: id.to_string(),
            state: Arc::new(state),
            version,
        })
    }

    /// Decides `command` against a loaded aggregate and adds the resulting events to `decision`.
    /// Returns the state after the events, so the caller can build its answer.
    pub fn decide_into<A: EventSourced>(
        &self,
        decision: &mut Decision,
        loaded: &Loaded<A>,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Arc<A>, CommandError>
    where
        A::Error: Rejection,
    {
        let events = loaded
            .state
            .decide(command)
            .map_err(|e| e.to_command_error())?;
        Ok(self.push_events(decision, loaded, events, ctx))
    }

    /// Like [`CommandService::decide_into`], for a caller that is done with the loaded aggregate:
    /// the state is changed in place instead of copied when nothing else holds it (the state
    /// cache lets go of this stream's entry first; the commit puts the new state back). Returns
    /// the state after the events and the stream version it is at.
    pub fn decide_owned<A: EventSourced>(
        &self,
        decision: &mut Decision,
        loaded: Loaded<A>,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<(Arc<A>, u64), CommandError>
    where
        A::Error: Rejection,
    {
        let events = loaded
            .state
            .decide(command)
            .map_err(|e| e.to_command_error())?;
        if events.is_empty() {
            return Ok((loaded.state, loaded.version));
        }
        let Loaded { id, state, version } = loaded;
        if let Some(cache) = &self.cache {
            // A commit that does not go through evicts the stream anyway; one that does puts
            // its new state back.
            cache.evict(&StreamRef::new(A::STREAM_TYPE, id.as_str()));
        }
        let state = Arc::try_unwrap(state).unwrap_or_else(|shared| A::clone(&shared));
        let count = events.len() as u64;
        let state = self.push_state(decision, id, version, state, events, ctx);
        Ok((state, version + count))
    }

    /// Adds already decided events for one stream to `decision`; returns the new state (shared
    /// with the state cache, so it is not copied again).
    pub fn push_events<A: EventSourced>(
        &self,
        decision: &mut Decision,
        loaded: &Loaded<A>,
        events: Vec<A::Event>,
        ctx: &CommandContext,
    ) -> Arc<A> {
        if events.is_empty() {
            return loaded.state.clone();
        }
        let state = A::clone(&loaded.state);
        self.push_state(
            decision,
            loaded.id.clone(),
            loaded.version,
            state,
            events,
            ctx,
        )
    }

    /// Applies `events` (not empty) to `state`, the state of stream `id` at `version`, and adds
    /// them to `decision`.
    fn push_state<A: EventSourced>(
        &self,
        decision: &mut Decision,
        id: String,
        version: u64,
        mut state: A,
        events: Vec<A::Event>,
        ctx: &CommandContext,
    ) -> Arc<A> {
        let now = self.clock.now();
        let mut metadata = ctx.metadata.clone();
        if let Some(key) = &ctx.idempotency {
            metadata.command_id = Some(key.command_id.clone());
        }
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            state.apply(event);
            new_events.push(NewEvent {
                event_id: Uuid::now_v7(),
                event_type: event.event_type().to_string(),
                event_version: event.event_version(),
                occurred_at: now,
                payload: Payload::of_event(event),
                metadata: metadata.clone(),
            });
        }
        let new_version = version + events.len() as u64;
        let every = self.config.snapshot_every.max(1);
        let snapshot = if new_version / every > version / every {
            match serde_json::to_value(&state) {
                Ok(value) => Some(Snapshot {
                    version: new_version,
                    schema_version: A::SNAPSHOT_VERSION,
                    state: value,
                }),
                Err(err) => {
                    // A snapshot is an optimisation: skipping it only costs load time.
                    tracing::warn!(error = %err, "cannot serialize snapshot, skipping it");
                    None
                }
            }
        } else {
            None
        };
        let state = Arc::new(state);
        // Two decisions on the same stream in one commit are merged in order.
        let stream = StreamRef::new(A::STREAM_TYPE, id);
        if let Some(existing) = decision.appends.iter_mut().find(|a| a.stream == stream) {
            existing.events.extend(new_events);
            existing.snapshot = None;
            // Not cached: the stream's final state is the caller's business here.
            decision.states.retain(|(s, _)| s != &stream);
        } else {
            if self.cache.is_some() {
                decision
                    .states
                    .push((stream.clone(), state.clone() as AnyState));
            }
            decision.appends.push(StreamAppend {
                stream,
                expected_version: version,
                events: new_events,
                snapshot,
            });
        }
        state
    }

    /// Looks up an earlier answer for the context's idempotency key.
    ///
    /// Returns `Ok(Some(answer))` for a replay, `Err(IdempotencyMismatch)` when the key was used
    /// for a different request, `Ok(None)` when the key is new (or absent).
    pub async fn replay<T: DeserializeOwned>(
        &self,
        ctx: &CommandContext,
    ) -> Result<Option<Executed<T>>, CommandError> {
        let Some(key) = &ctx.idempotency else {
            return Ok(None);
        };
        match self.store.idempotency(&key.command_id).await? {
            None => Ok(None),
            Some((result, record)) => Ok(Some(Self::replayed(key, result, record)?)),
        }
    }

    fn replayed<T: DeserializeOwned>(
        key: &IdempotencyKey,
        result: CommitResult,
        record: Idempotency,
    ) -> Result<Executed<T>, CommandError> {
        if record.fingerprint != key.fingerprint {
            return Err(CommandError::IdempotencyMismatch);
        }
        let value = serde_json::from_value(record.outcome)
            .map_err(|e| CommandError::Internal(format!("unreadable idempotency outcome: {e}")))?;
        Ok(Executed {
            value,
            commit: Some(result),
            replayed: true,
        })
    }

    /// Writes a decision atomically, with the context's idempotency key.
    pub async fn commit<T: Serialize + DeserializeOwned>(
        &self,
        decision: Decision,
        ctx: &CommandContext,
        value: T,
    ) -> Result<Executed<T>, CommandError> {
        let idempotency = match &ctx.idempotency {
            Some(key) => Some(Idempotency {
                command_id: key.command_id.clone(),
                fingerprint: key.fingerprint.clone(),
                outcome: serde_json::to_value(&value).map_err(|e| {
                    CommandError::Internal(format!("cannot serialize outcome: {e}"))
                })?,
            }),
            None => None,
        };
        if decision.appends.is_empty() && idempotency.is_none() {
            return Ok(Executed {
                value,
                commit: None,
                replayed: false,
            });
        }
        let touched: Vec<StreamRef> = decision.appends.iter().map(|a| a.stream.clone()).collect();
        let states = decision.states;
        // Released when this function returns: after the cache holds the committed states.
        let _held = decision.held;
        let commit = Commit {
            streams: decision.appends,
            idempotency,
        };
        let outcome = self.store.append(commit).await;
        if let Some(cache) = &self.cache {
            match &outcome {
                Ok(AppendOutcome::Committed(result)) => {
                    for stream in &touched {
                        let state = states.iter().find(|(s, _)| s == stream);
                        let version = result.streams.iter().find(|v| &v.stream == stream);
                        match (state, version) {
                            (Some((_, state)), Some(v)) => {
                                cache.put(stream, v.version, state.clone())
                            }
                            _ => cache.evict(stream),
                        }
                    }
                }
                // A duplicate, a conflict or a failure: what the streams hold now is unknown.
                _ => touched.iter().for_each(|s| cache.evict(s)),
            }
        }
        match outcome? {
            AppendOutcome::Committed(result) => Ok(Executed {
                value,
                commit: Some(result),
                replayed: false,
            }),
            AppendOutcome::Duplicate {
                result,
                idempotency,
            } => match &ctx.idempotency {
                Some(key) => Self::replayed(key, result, idempotency),
                None => Err(CommandError::Internal(
                    "duplicate reported for a commit without a command id".into(),
                )),
            },
        }
    }

    /// Runs `attempt` until it does not hit a version conflict, at most `max_attempts` times,
    /// with jittered exponential backoff. Replays an earlier answer for a known key first.
    pub async fn run<T, F, Fut>(
        &self,
        ctx: &CommandContext,
        mut attempt: F,
    ) -> Result<Executed<T>, CommandError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(Decision, T), CommandError>>,
    {
        if let Some(replay) = self.replay(ctx).await? {
            return Ok(replay);
        }
        let mut tries = 0;
        // Whether attempts must read every stream from the store (set when a rejection has to
        // be confirmed on fresh states).
        let mut fresh = self.cache.is_none();
        loop {
            tries += 1;
            let scope = AttemptScope {
                use_cache: !fresh,
                hits: Cell::new(0),
            };
            let (attempted, hits) = ATTEMPT
                .scope(scope, async {
                    let attempted = attempt().await;
                    (attempted, ATTEMPT.with(|a| a.hits.get()))
                })
                .await;
            let result = match attempted {
                Ok((decision, value)) => self.commit(decision, ctx, value).await,
                Err(e) => Err(e),
            };
            match result {
                Err(
                    e @ (CommandError::NotFound { .. }
                    | CommandError::Invalid { .. }
                    | CommandError::Rejected { .. }),
                ) if hits > 0 && !fresh => {
                    tracing::debug!(error = %e, "rejected on cached state, deciding again on fresh state");
                    fresh = true;
                }
                Err(CommandError::Store(StoreError::Conflict { stream, .. }))
                    if tries < self.config.max_attempts =>
                {
                    metrics_conflict();
                    tracing::debug!(%stream, tries, "version conflict, deciding again");
                    self.backoff(tries).await;
                }
                Err(CommandError::Store(StoreError::Unavailable(reason)))
                    if tries < self.config.max_attempts =>
                {
                    tracing::debug!(%reason, tries, "store busy, retrying");
                    self.backoff(tries).await;
                }
                Err(CommandError::Store(StoreError::Conflict { stream, .. })) => {
                    metrics_conflict();
                    return Err(CommandError::Conflict {
                        stream: stream.to_string(),
                    });
                }
                other => return other,
            }
        }
    }

    async fn backoff(&self, tries: u32) {
        let base = self.config.retry_base.as_micros() as u64;
        let cap = base.saturating_mul(1 << tries.min(8));
        let jitter = rand::rng().random_range(0..=cap.max(1));
        tokio::time::sleep(Duration::from_micros(base / 2 + jitter)).await;
    }

    /// Loads one aggregate, decides one command, commits: the common single-stream case.
    pub async fn execute<A, T, C, V>(
        &self,
        id: &str,
        ctx: &CommandContext,
        command: C,
        answer: V,
    ) -> Result<Executed<T>, CommandError>
    where
        A: EventSourced,
        A::Error: Rejection,
        T: Serialize + DeserializeOwned,
        C: Fn(&Loaded<A>) -> Result<A::Command, CommandError>,
        V: Fn(&A, u64) -> T,
    {
        self.run(ctx, || async {
            let loaded = self.load::<A>(id).await?;
            let cmd = command(&loaded)?;
            let mut decision = Decision::default();
            let (state, version) = self.decide_owned(&mut decision, loaded, cmd, ctx)?;
            let value = answer(&state, version);
            Ok((decision, value))
        })
        .await
    }
}

fn metrics_conflict() {
    metrics::counter!("backbone_command_conflict_retries_total").increment(1);
}
