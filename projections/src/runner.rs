//! Runner logic: feed a projection from the event store with checkpoints, fill gaps, rebuild.
//!
//! The loop around it (waking on commit, backoff, health, shutdown) belongs to the `workers`
//! crate; everything here is one step at a time so that it can be tested without a runtime loop.

use crate::store::{ApplyOutcome, EventBatch, Projection, ReadModelError, ReadModelStore};
use commands::{EventEnvelope, EventStore, FeedCursor, StoreError, StreamRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use uuid::Uuid;

/// Feed page size of a normal step.
pub const DEFAULT_BATCH: usize = 500;
/// Feed page size used when rebuilding (one read-model transaction per page).
pub const REBUILD_BATCH: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("read model store: {0}")]
    ReadModel(#[from] ReadModelError),
    /// The event store did not return every event needed to close a gap.
    #[error("gap in {stream} cannot be filled: needed {expected}..={to}, the store returned {found} events")]
    UnfillableGap {
        stream: StreamRef,
        expected: u64,
        to: u64,
        found: usize,
    },
    /// A feed page held an event without a feed position (a broken feed adapter).
    #[error("feed event {event_id} has no global position")]
    MissingPosition { event_id: Uuid },
}

impl RunnerError {
    /// Whether retrying later may succeed without a code or data fix.
    pub fn is_transient(&self) -> bool {
        match self {
            RunnerError::Store(e) => e.is_transient(),
            RunnerError::ReadModel(e) => e.is_transient(),
            // Events may still be on their way in an eventually consistent backend.
            RunnerError::UnfillableGap { .. } => true,
            RunnerError::MissingPosition { .. } => false,
        }
    }
}

/// What one `step` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The feed had nothing after the checkpoint.
    Idle,
    /// A page was consumed; `position` is the new checkpoint.
    Progressed {
        applied: usize,
        position: FeedCursor,
    },
}

/// Counts of one `apply_with_gap_fill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplySummary {
    pub applied: usize,
    /// Duplicates (already applied) that were skipped.
    pub skipped: usize,
    /// Events read from the event store to fill gaps.
    pub filled: usize,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RebuildSummary {
    /// Feed events read.
    pub events: u64,
    /// Events applied, summed over the projections rebuilt.
    pub applied: usize,
    /// The feed cursor reached (every rebuilt projection's checkpoint).
    pub position: FeedCursor,
}

/// A deferred checkpoint is written once it lags by this many feed events...
pub const CHECKPOINT_LAG: u64 = 1_000;
/// ...or is this old.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpointing {
    EveryPage,
    Deferred,
}

/// Where a runner is, as it last read or wrote it.
#[derive(Debug, Clone)]
struct Cursor {
    /// The position the read model reflects: events after it are not applied yet.
    position: FeedCursor,
    /// The checkpoint last written to (or read from) the read-model store.
    durable: FeedCursor,
    /// When `durable` was written or read.
    durable_at: Instant,
}

impl Cursor {
    fn durable(position: FeedCursor) -> Self {
        Self {
            durable: position.clone(),
            position,
            durable_at: Instant::now(),
        }
    }

    /// Whether a deferred checkpoint should be written now.
    fn due(&self) -> bool {
        self.durable.behind(&self.position) >= CHECKPOINT_LAG
            || self.durable_at.elapsed() >= CHECKPOINT_INTERVAL
    }
}

/// Drives one projection from the event store into the read-model store.
///
/// `step` and `rebuild` take turns on one lock: a rebuild requested while the projection's
/// worker is running waits for the current step, holds the worker off while it replays, and the
/// worker carries on from the rebuilt checkpoint afterwards. Other projections are not affected.
pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    projection: Arc<dyn Projection>,
    batch: usize,
    /// `None` until the checkpoint is read from the store (and again after a failed step or a
    /// rebuild). The runner is the checkpoint's only writer.
    cursor: tokio::sync::Mutex<Option<Cursor>>,
}

impl ProjectionRunner {
    /// `batch` is the feed page size of a step (at least 1).
    pub fn new(
        store: Arc<dyn EventStore>,
        models: Arc<dyn ReadModelStore>,
        projection: Arc<dyn Projection>,
        batch: usize,
    ) -> Self {
        Self {
            store,
            models,
            projection,
            batch: batch.max(1),
            cursor: tokio::sync::Mutex::new(None),
        }
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    pub fn projection(&self) -> &Arc<dyn Projection> {
        &self.projection
    }

    /// Reads one feed page after the checkpoint and applies the events this projection handles,
    /// writing the page's last position as the checkpoint in the same transaction (even when
    /// none of them was handled, so the checkpoint advances past foreign events). Only the
    /// page's events this projection handles are copied out of the store.
    pub async fn step(&self) -> Result<StepOutcome, RunnerError> {
        self.step_with(Checkpointing::EveryPage).await
    }

    /// Like [`ProjectionRunner::step`], but a page without any of this projection's events only
    /// moves the in-memory position: the checkpoint is written with the next page that has some,
    /// or once it lags by [`CHECKPOINT_LAG`] positions or [`CHECKPOINT_INTERVAL`] (checked on
    /// every step, idle ones included). Worker loops use this: under a stream of foreign events
    /// (every cart change, for the catalog) it saves a read-model transaction per commit. After a
    /// crash, at most that lag of foreign events is read again, and ignored again.
    pub async fn step_deferred(&self) -> Result<StepOutcome, RunnerError> {
        self.step_with(Checkpointing::Deferred).await
    }

    #[tracing::instrument(skip_all, fields(projection = self.projection.name()), err)]
    async fn step_with(&self, mode: Checkpointing) -> Result<StepOutcome, RunnerError> {
        let mut cursor = self.cursor.lock().await;
        let current = match &*cursor {
            Some(c) => c.clone(),
            None => {
                let c = Cursor::durable(self.models.checkpoint(self.projection.name()).await?);
                *cursor = Some(c.clone());
                c
            }
        };
        let handles = |e: &EventEnvelope| self.projection.handles(e);
        let page = self
            .store
            .feed_filtered(commands::FeedFilter {
                after: &current.position,
                limit: self.batch,
                keep: &handles,
            })
            .await?;
        if let Some(e) = page.events.iter().find(|e| e.global_position.is_none()) {
            return Err(RunnerError::MissingPosition {
                event_id: e.event_id,
            });
        }
        let (position, events) = match page.next {
            Some(position) => (position, page.events),
            None if current.position != current.durable && current.due() => {
                // Idle with a deferred checkpoint that is due: write it alone.
                (current.position.clone(), Vec::new())
            }
            None => return Ok(StepOutcome::Idle),
        };
        let idle = position == current.position;
        let moved = Cursor {
            position: position.clone(),
            ..current
        };
        if events.is_empty() && !idle && mode == Checkpointing::Deferred && !moved.due() {
            *cursor = Some(moved);
            return Ok(StepOutcome::Progressed {
                applied: 0,
                position,
            });
        }
        let traced = event_spans(self.projection.name(), &events);
        let summary = apply_filling_gaps(
            self.store.as_ref(),
            self.models.as_ref(),
            &self.projection,
            events,
            Some(&position),
        )
        .await;
        drop(traced);
        let summary = match summary {
            Ok(summary) => summary,
            Err(err) => {
                // What the store holds is unknown now: read the checkpoint again next time.
                *cursor = None;
                return Err(err);
            }
        };
        *cursor = Some(Cursor::durable(position.clone()));
        if idle {
            return Ok(StepOutcome::Idle);
        }
        tracing::debug!(
            applied = summary.applied,
            skipped = summary.skipped,
            filled = summary.filled,
            %position,
            "projection step"
        );
        Ok(StepOutcome::Progressed {
            applied: summary.applied,
            position,
        })
    }

    /// Applies events delivered from outside the feed (for example an SQS batch: at least once,
    /// any order), without touching the checkpoint. Duplicates are skipped; a gap is filled by
    /// `read` from the event store and applied in order before the rest of the batch.
    #[tracing::instrument(skip_all, fields(projection = self.projection.name(), events = events.len()), err)]
    pub async fn apply_with_gap_fill(
        &self,
        events: Vec<EventEnvelope>,
    ) -> Result<ApplySummary, RunnerError> {
        let events: Vec<EventEnvelope> = events
            .into_iter()
            .filter(|e| self.projection.handles(e))
            .collect();
        let _traced = event_spans(self.projection.name(), &events);
        apply_filling_gaps(
            self.store.as_ref(),
            self.models.as_ref(),
            &self.projection,
            events,
            None,
        )
        .await
    }

    /// Rebuilds the projection blue/green: replays the feed into a new generation made by
    /// `generations` while this runner keeps the live one current and queries read it, catches
    /// the new generation up, then, holding this runner's steps, applies the last events,
    /// promotes it and moves the runner onto it (this runner's read models must be the
    /// [`crate::GenerationRouter`] that `generations` switches). `progress(position, head)` is
    /// called after every replayed page.
    pub async fn rebuild_blue_green(
        &self,
        generations: &dyn crate::Generations,
        progress: impl Fn(u64, u64) + Send + Sync,
    ) -> Result<RebuildSummary, RunnerError> {
        let prepared = generations.prepare(self.projection.as_ref()).await?;
        let (generation, next) = (prepared.generation, prepared.store.clone());
        let batch = self.batch.max(REBUILD_BATCH);
        let mut summary = rebuild_all(
            self.store.clone(),
            next.clone(),
            std::slice::from_ref(&self.projection),
            batch,
            &progress,
        )
        .await?;
        let builder = ProjectionRunner::new(
            self.store.clone(),
            next.clone(),
            self.projection.clone(),
            batch,
        );
        // What came in during the replay, while the live runner still runs.
        summary.applied += builder.catch_up().await?;
        let mut cursor = self.cursor.lock().await;
        // The last few, with the live runner held: the new generation is now exactly as current.
        summary.applied += builder.catch_up().await?;
        let replaced = generations
            .promote(self.projection.as_ref(), &prepared)
            .await?;
        // The live runner goes on from the promoted generation's checkpoint.
        *cursor = None;
        drop(cursor);
        tracing::info!(
            projection = self.projection.name(),
            generation,
            version = self.projection.version(),
            "read model generation promoted"
        );
        let propagation = generations.propagation();
        if !propagation.is_zero() {
            // Other processes wrote the old generation until they saw the promotion; every
            // event they handled is in the feed by then.
            tokio::time::sleep(propagation).await;
            summary.applied += builder.catch_up().await?;
        }
        generations
            .drop_replaced(self.projection.as_ref(), replaced)
            .await?;
        summary.position = next.checkpoint(self.projection.name()).await?;
        progress(summary.position.count(), summary.position.count());
        Ok(summary)
    }

    /// Steps until the feed has nothing more for this projection; returns the events applied.
    async fn catch_up(&self) -> Result<usize, RunnerError> {
        let mut applied = 0;
        while let StepOutcome::Progressed { applied: n, .. } = self.step().await? {
            applied += n;
        }
        Ok(applied)
    }

    /// Drops the projection's read model and replays the feed from 0 to the head seen at the
    /// start, in pages of at least [`REBUILD_BATCH`]. `progress(position, head)` is called after
    /// every page. Steps of this runner wait while it runs, and continue from the rebuilt
    /// checkpoint; other runners keep going.
    pub async fn rebuild(
        &self,
        progress: impl Fn(u64, u64) + Send + Sync,
    ) -> Result<RebuildSummary, RunnerError> {
        let mut cursor = self.cursor.lock().await;
        *cursor = None;
        rebuild_all(
            self.store.clone(),
            self.models.clone(),
            std::slice::from_ref(&self.projection),
            self.batch.max(REBUILD_BATCH),
            progress,
        )
        .await
    }
}

/// One `project` span per live event that continues a request's trace, open while its batch is
/// applied. Rebuilds make none: a replay is nobody's request.
fn event_spans(projection: &'static str, events: &[EventEnvelope]) -> Vec<tracing::Span> {
    commands::trace::event_spans(events, |e, parent| {
        tracing::info_span!(
            "project",
            projection,
            event_type = %e.event_type,
            stream = %e.stream(),
            sequence = e.sequence,
            trace_id = %parent.trace_id(),
        )
    })
}

/// Rebuilds several projections in one pass over the feed: every page is read once and applied
/// to every projection concurrently (one transaction per projection and page), while the next
/// page is being read. `progress(read, head)` is called after every page, with the events read
/// so far and the events up to the head seen at the start.
pub async fn rebuild_all(
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    projections: &[Arc<dyn Projection>],
    batch: usize,
    progress: impl Fn(u64, u64) + Send + Sync,
) -> Result<RebuildSummary, RunnerError> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let span = tracing::info_span!("rebuild", projections = ?names);
    async move {
        let batch = batch.max(1);
        for p in projections {
            models.reset(p.as_ref()).await?;
        }
        let head = store.head().await?;
        let mut summary = RebuildSummary::default();
        if head == FeedCursor::start() {
            return Ok(summary);
        }
        let mut page = store.feed(&FeedCursor::start(), batch).await?;
        while !page.is_empty() {
            if let Some(e) = page.iter().find(|e| e.global_position.is_none()) {
                return Err(RunnerError::MissingPosition {
                    event_id: e.event_id,
                });
            }
            let position = summary.position.after(&page);
            summary.events += page.len() as u64;
            let mut current = Some(std::mem::take(&mut page));
            // Each projection gets the events it handles (the last one takes the page itself,
            // the others copies) and they are applied concurrently: adapters can do the
            // projection work of different projections in parallel.
            let applies = projections.iter().enumerate().map(|(i, p)| {
                let events: Vec<EventEnvelope> = if i + 1 == projections.len() {
                    current
                        .take()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|e| p.handles(e))
                        .collect()
                } else {
                    current
                        .iter()
                        .flatten()
                        .filter(|e| p.handles(e))
                        .cloned()
                        .collect()
                };
                apply_filling_gaps(store.as_ref(), models.as_ref(), p, events, Some(&position))
            });
            let apply = async {
                let summaries = futures::future::try_join_all(applies).await?;
                Ok::<usize, RunnerError>(summaries.iter().map(|s| s.applied).sum())
            };
            let done = position.covers(&head);
            if done {
                summary.applied += apply.await?;
            } else {
                // Read the next page while this one is being written.
                let (applied, next) = tokio::join!(apply, store.feed(&position, batch));
                summary.applied += applied?;
                page = next?;
            }
            progress(position.count(), head.count());
            summary.position = position;
            if done {
                break;
            }
        }
        tracing::info!(
            events = summary.events,
            applied = summary.applied,
            position = %summary.position,
            "rebuild finished"
        );
        Ok(summary)
    }
    .instrument(span)
    .await
}

/// Applies `events`; on every gap reads the missing range from the event store and retries
/// with it in front of the rest. Each round commits at least the events before the gap, and the
/// fill is checked to be complete, so the loop always ends.
async fn apply_filling_gaps(
    store: &dyn EventStore,
    models: &dyn ReadModelStore,
    projection: &Arc<dyn Projection>,
    events: Vec<EventEnvelope>,
    checkpoint: Option<&FeedCursor>,
) -> Result<ApplySummary, RunnerError> {
    let mut summary = ApplySummary::default();
    // An erasure overwrote personal fields: the store then purges what it kept of the old ones.
    let erases = events
        .iter()
        .any(|e| e.stream_type == domain::StreamType::Customer);
    let mut pending = events;
    loop {
        let outcome = models
            .apply_batch(EventBatch {
                projection: projection.clone(),
                events: pending,
                checkpoint: checkpoint.cloned(),
            })
            .await?;
        summary.applied += outcome.applied();
        summary.skipped += outcome.skipped();
        match outcome {
            ApplyOutcome::Applied { .. } => {
                if erases {
                    models.purge().await?;
                }
                return Ok(summary);
            }
            ApplyOutcome::Gap {
                stream,
                expected,
                got,
                remaining,
                ..
            } => {
                let to = got - 1;
                tracing::debug!(
                    projection = projection.name(),
                    %stream,
                    expected,
                    got,
                    "gap detected, filling from the event store"
                );
                let fill = store.read(&stream, expected..=to).await?;
                let complete = fill.len() as u64 == got - expected
                    && fill
                        .iter()
                        .zip(expected..)
                        .all(|(e, seq)| e.sequence == seq);
                if !complete {
                    return Err(RunnerError::UnfillableGap {
                        stream,
                        expected,
                        to,
                        found: fill.len(),
                    });
                }
                summary.filled += fill.len();
                let fill: Vec<EventEnvelope> =
                    fill.into_iter().filter(|e| projection.handles(e)).collect();
                pending = fill;
                pending.extend(remaining);
            }
        }
    }
}
