//! The command service: load the streams a command touches, decide with the pure domain, append
//! with expected versions, and retry on conflict.
//!
//! A command is an async closure over an [`Attempt`]: it loads aggregates through the
//! [`Loader`] port, decides with [`Attempt::decide`] (cqrs-es's `Aggregate::handle`, then
//! `Aggregate::apply`), and returns the attempt with its answer. [`CommandService::run`] appends
//! everything the attempt decided in one all-or-nothing commit, with the command id, and runs
//! the closure again on a version conflict.

use crate::error::{CommandError, Rejection};
use crate::loader::{AnyState, Committed, Intent, LoadRequest, LoadedState, Loader, StoreLoader};
use crate::ports::Clock;
use crate::store::{
    AppendOutcome, Commit, CommitResult, EventStore, Idempotency, Metadata, NewEvent, Snapshot,
    StoreError, StreamAppend, StreamRef,
};
use crate::Payload;
use chrono::{DateTime, Utc};
use domain::{Event, EventSourced};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            snapshot_every: 100,
            retry_base: Duration::from_millis(2),
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
    /// A context for a command a system worker (`worker`) sends under a fixed command id: every
    /// worker that races on the same step sends the same id, so the step commits once and the
    /// others get its answer.
    pub fn keyed(worker: &str, command_id: String, correlation_id: String) -> Self {
        Self {
            metadata: Metadata {
                correlation_id,
                actor: crate::store::Actor {
                    subject: worker.into(),
                    role: "system".into(),
                },
                command_id: Some(command_id.clone()),
                ..Metadata::default()
            },
            idempotency: Some(IdempotencyKey {
                command_id,
                fingerprint: String::new(),
            }),
        }
    }

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
    /// Shared with the loader's memory, when it has one: loading copies nothing.
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

/// One attempt at a command: what it loaded and what it decided, possibly on several streams.
pub struct Attempt {
    loader: Arc<dyn Loader>,
    clock: Arc<dyn Clock>,
    metadata: Metadata,
    snapshot_every: u64,
    /// Load only from the store (set when a rejection has to be confirmed on fresh states).
    fresh: bool,
    /// Set when a state came from the loader's memory.
    remembered: Arc<AtomicBool>,
    appends: Vec<StreamAppend>,
    /// The state each stream reaches if the commit goes through.
    states: Vec<(StreamRef, AnyState)>,
    /// What the loader holds until the commit is answered (stream locks).
    guards: Vec<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("appends", &self.appends)
            .finish_non_exhaustive()
    }
}

impl Attempt {
    /// Loads aggregate `A` to decide on it.
    pub async fn load<A: EventSourced>(&mut self, id: &str) -> Result<Loaded<A>, CommandError> {
        self.load_with(id, Intent::Decide).await
    }

    /// Loads aggregate `A` to read it only (this command appends nothing to it).
    pub async fn read<A: EventSourced>(&mut self, id: &str) -> Result<Loaded<A>, CommandError> {
        self.load_with(id, Intent::Read).await
    }

    async fn load_with<A: EventSourced>(
        &mut self,
        id: &str,
        intent: Intent,
    ) -> Result<Loaded<A>, CommandError> {
        let intent = if self.fresh { Intent::Latest } else { intent };
        let stream = StreamRef::new(A::STREAM_TYPE, id);
        let loaded = self
            .loader
            .load(LoadRequest::of::<A>(&stream, intent))
            .await?;
        if loaded.remembered {
            self.remembered.store(true, Ordering::Relaxed);
        }
        if let Some(guard) = loaded.guard {
            self.guards.push(guard);
        }
        typed(id, loaded.state, loaded.version)
    }

    /// The service clock's "now", for commands that carry a time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Decides `command` on `loaded` with `Aggregate::handle` and folds the events it returns
    /// into the state with `Aggregate::apply`. The events join this attempt's commit; the
    /// answer is the aggregate after them. Deciding twice on one stream appends both in order.
    pub async fn decide<A: EventSourced>(
        &mut self,
        loaded: Loaded<A>,
        command: A::Command,
    ) -> Result<Loaded<A>, CommandError>
    where
        A::Error: Rejection,
    {
        let events = cqrs_es::Aggregate::handle(loaded.state.as_ref(), command, &())
            .await
            .map_err(|e| e.to_command_error())?;
        if events.is_empty() {
            return Ok(loaded);
        }
        let Loaded { id, state, version } = loaded;
        let mut state = Arc::unwrap_or_clone(state);
        let now = self.clock.now();
        let mut new_events = Vec::with_capacity(events.len());
        for event in events {
            new_events.push(NewEvent {
                event_id: Uuid::now_v7(),
                event_type: Event::event_type(&event).to_owned(),
                event_version: Event::event_version(&event),
                occurred_at: now,
                payload: Payload::of_event(&event),
                metadata: self.metadata.clone(),
            });
            cqrs_es::Aggregate::apply(&mut state, event);
        }
        let new_version = version + new_events.len() as u64;
        let stream = StreamRef::new(A::STREAM_TYPE, id.as_str());
        let snapshot = self.snapshot(&state, version, new_version);
        let state = Arc::new(state);
        self.states.retain(|(s, _)| s != &stream);
        self.states
            .push((stream.clone(), state.clone() as AnyState));
        match self.appends.iter_mut().find(|a| a.stream == stream) {
            Some(existing) => {
                existing.events.extend(new_events);
                existing.snapshot = snapshot;
            }
            None => self.appends.push(StreamAppend {
                stream,
                expected_version: version,
                events: new_events,
                snapshot,
            }),
        }
        Ok(Loaded {
            id,
            state,
            version: new_version,
        })
    }

    /// A snapshot whenever the stream's version crosses a multiple of `snapshot_every`.
    fn snapshot<A: EventSourced>(&self, state: &A, from: u64, to: u64) -> Option<Snapshot> {
        let every = self.snapshot_every.max(1);
        if to / every <= from / every {
            return None;
        }
        match serde_json::to_value(state) {
            Ok(value) => Some(Snapshot {
                version: to,
                schema_version: A::SNAPSHOT_VERSION,
                state: value,
            }),
            Err(err) => {
                // A snapshot is an optimisation: skipping it only costs load time.
                tracing::warn!(error = %err, "cannot serialize snapshot, skipping it");
                None
            }
        }
    }
}

fn typed<A: EventSourced>(
    id: &str,
    state: AnyState,
    version: u64,
) -> Result<Loaded<A>, CommandError> {
    let state = state.downcast::<A>().map_err(|_| {
        CommandError::Internal(format!(
            "loader returned another type for {}#{id}",
            A::STREAM_TYPE
        ))
    })?;
    Ok(Loaded {
        id: id.to_owned(),
        state,
        version,
    })
}

/// Turns commands into atomic commits.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    loader: Arc<dyn Loader>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
}

impl CommandService {
    /// A service that loads straight from `store`, with no decorators.
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, config: ServiceConfig) -> Self {
        let loader = Arc::new(StoreLoader::new(store.clone()));
        Self::with_loader(store, loader, clock, config)
    }

    /// A service that loads through `loader` (a [`StoreLoader`] over the same store, possibly
    /// decorated).
    pub fn with_loader(
        store: Arc<dyn EventStore>,
        loader: Arc<dyn Loader>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            store,
            loader,
            clock,
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Loads an aggregate's current state from the store, outside any command (queries,
    /// answers).
    pub async fn load<A: EventSourced>(&self, id: &str) -> Result<Loaded<A>, CommandError> {
        let stream = StreamRef::new(A::STREAM_TYPE, id);
        let request = LoadRequest::of::<A>(&stream, Intent::Latest);
        let LoadedState { state, version, .. } = self.loader.load(request).await?;
        typed(id, state, version)
    }

    fn attempt(&self, ctx: &CommandContext, fresh: bool, remembered: &Arc<AtomicBool>) -> Attempt {
        let mut metadata = ctx.metadata.clone();
        if let Some(key) = &ctx.idempotency {
            metadata.command_id = Some(key.command_id.clone());
        }
        Attempt {
            loader: self.loader.clone(),
            clock: self.clock.clone(),
            metadata,
            snapshot_every: self.config.snapshot_every,
            fresh,
            remembered: remembered.clone(),
            appends: Vec::new(),
            states: Vec::new(),
            guards: Vec::new(),
        }
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

    /// Records `value` as the answer to the context's idempotency key, appending no events (an
    /// answer built from steps that were each recorded on their own). A retry with the same key
    /// gets the first answer.
    pub async fn remember<T: Serialize + DeserializeOwned>(
        &self,
        ctx: &CommandContext,
        value: T,
    ) -> Result<Executed<T>, CommandError> {
        let remembered = Arc::new(AtomicBool::new(false));
        self.commit(self.attempt(ctx, true, &remembered), ctx, value)
            .await
    }

    /// Appends what an attempt decided, atomically, with the context's idempotency key.
    async fn commit<T: Serialize + DeserializeOwned>(
        &self,
        attempt: Attempt,
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
        if attempt.appends.is_empty() && idempotency.is_none() {
            return Ok(Executed {
                value,
                commit: None,
                replayed: false,
            });
        }
        let Attempt {
            appends,
            states,
            guards,
            ..
        } = attempt;
        let touched: Vec<StreamRef> = appends.iter().map(|a| a.stream.clone()).collect();
        let outcome = self
            .store
            .append(Commit {
                streams: appends,
                idempotency,
            })
            .await;
        // The loader learns what the streams hold now, before the locks are released.
        let committed: Vec<(StreamRef, Committed)> = touched
            .into_iter()
            .map(|stream| {
                let reached = match &outcome {
                    Ok(AppendOutcome::Committed(result)) => {
                        let state = states.iter().find(|(s, _)| s == &stream);
                        let version = result.streams.iter().find(|v| v.stream == stream);
                        match (state, version) {
                            (Some((_, state)), Some(v)) => Committed::At {
                                version: v.version,
                                state: state.clone(),
                            },
                            _ => Committed::Unknown,
                        }
                    }
                    _ => Committed::Unknown,
                };
                (stream, reached)
            })
            .collect();
        self.loader.committed(&committed);
        drop(committed);
        drop(guards);
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

    /// Runs a command: replays an earlier answer for a known key, else gives `command` a fresh
    /// [`Attempt`], appends what it decided, and runs it again on a version conflict (at most
    /// `max_attempts` times, with jittered exponential backoff).
    pub async fn run<T, F, Fut>(
        &self,
        ctx: &CommandContext,
        mut command: F,
    ) -> Result<Executed<T>, CommandError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<(Attempt, T), CommandError>>,
    {
        if let Some(replay) = self.replay(ctx).await? {
            return Ok(replay);
        }
        let mut tries = 0;
        let mut fresh = false;
        loop {
            tries += 1;
            let remembered = Arc::new(AtomicBool::new(false));
            let result = match command(self.attempt(ctx, fresh, &remembered)).await {
                Ok((attempt, value)) => self.commit(attempt, ctx, value).await,
                Err(e) => Err(e),
            };
            match result {
                // A rejection decided on a remembered state may be stale: decide again on
                // states read from the store before returning it.
                Err(
                    e @ (CommandError::NotFound { .. }
                    | CommandError::Invalid { .. }
                    | CommandError::Rejected { .. }),
                ) if !fresh && remembered.load(Ordering::Relaxed) => {
                    tracing::debug!(error = %e, "rejected on a remembered state, deciding again on fresh state");
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
    /// `command` builds the command from the loaded aggregate (or refuses), `answer` the reply
    /// from the aggregate after it and its version.
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
        let (command, answer) = (&command, &answer);
        self.run(ctx, |mut attempt| async move {
            let loaded = attempt.load::<A>(id).await?;
            let cmd = command(&loaded)?;
            let after = attempt.decide(loaded, cmd).await?;
            let value = answer(&after.state, after.version);
            Ok((attempt, value))
        })
        .await
    }
}

fn metrics_conflict() {
    metrics::counter!("backbone_command_conflict_retries_total").increment(1);
}
