//! The worker loop and what runs on it: timers (a round every so often) and the feed consumers,
//! projection runners and process managers.

use crate::health::Health;
use commands::FeedCursor;
use commands::{CheckpointStore, EventStore, ProcessManagers};
use projections::runner::{ProjectionRunner, StepOutcome};
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What one step of a worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: wait for a commit notification or the poll interval.
    Idle,
    /// Work was done up to this feed position; step again at once.
    Progressed(u64),
}

/// Loop timing.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// How long an idle worker sleeps when no commit notification arrives.
    pub poll: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What a worker loop runs under: the health registry it reports to, the token that stops it
/// and its timing. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LoopContext {
    pub health: Health,
    pub cancel: CancellationToken,
    pub config: LoopConfig,
}

impl LoopContext {
    pub fn new(health: Health, cancel: CancellationToken, config: LoopConfig) -> Self {
        Self {
            health,
            cancel,
            config,
        }
    }

    /// The same context with other timing.
    pub fn with_config(&self, config: LoopConfig) -> Self {
        Self {
            config,
            ..self.clone()
        }
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Runs `step` until `cancel` fires. Idle steps wait for `notify` (or `poll`); failing steps
/// back off exponentially with jitter, mark the worker unhealthy and are retried: the failing
/// work is never skipped.
pub async fn run_loop<F, Fut>(
    name: &str,
    context: LoopContext,
    notify: Option<Arc<Notify>>,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let LoopContext {
        health,
        cancel,
        config,
    } = context;
    health.register(name);
    let mut failures: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        // Register interest before looking at the feed so a commit in between is not missed.
        let fallback = Arc::new(Notify::new());
        let n = notify.clone().unwrap_or(fallback);
        let notified = n.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        health.step_started(name);
        let outcome = step().await;
        health.step_finished(name);
        match outcome {
            Ok(Outcome::Progressed(position)) => {
                failures = 0;
                health.progressed(name, position);
            }
            Ok(Outcome::Idle) => {
                failures = 0;
                health.caught_up(name);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(config.poll) => {}
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                metrics::counter!("backbone_worker_failures_total", "worker" => name.to_string())
                    .increment(1);
                tracing::warn!(worker = name, failures, error = %format!("{err:#}"), "worker step failed, backing off");
                health.failed(name, format!("{err:#}"));
                let exp = config
                    .backoff_min
                    .saturating_mul(1u32 << failures.min(10))
                    .min(config.backoff_max);
                let jitter = rand::rng().random_range(0..=exp.as_millis() as u64 / 2);
                let wait = exp / 2 + Duration::from_millis(jitter);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    tracing::info!(worker = name, "worker stopped");
}

/// Spawns [`run_loop`] for `worker`, calling `step` with a handle to it. The name is registered
/// with `health` before the task starts, so `/readyz` can't report ready before the worker exists.
pub fn spawn_loop<W, F, Fut>(
    name: String,
    context: LoopContext,
    notify: Option<Arc<Notify>>,
    worker: Arc<W>,
    step: F,
) -> tokio::task::JoinHandle<()>
where
    W: Send + Sync + 'static,
    F: Fn(Arc<W>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<Outcome>> + Send,
{
    context.health.register(&name);
    tokio::spawn(
        async move { run_loop(&name, context, notify, move || step(worker.clone())).await },
    )
}

/// A worker that runs on a clock rather than on commits: a round every `EVERY`, and another at
/// once after a round that handled a full batch.
pub trait Timer: Send + Sync + 'static {
    /// The worker's name in [`Health`].
    const NAME: &'static str;
    /// How long it waits after a round that was not full.
    const EVERY: Duration;

    /// Runs one round; `true` when it handled a full batch, so more may be due at once.
    fn round(&self) -> impl Future<Output = Result<bool, commands::CommandError>> + Send;
}

/// Spawns the loop of a [`Timer`], registered with `health` as a timer (it has no feed position).
pub fn spawn_timer<T: Timer>(timer: Arc<T>, context: LoopContext) -> tokio::task::JoinHandle<()> {
    let config = LoopConfig {
        poll: T::EVERY,
        ..context.config.clone()
    };
    context.health.register_timer(T::NAME);
    spawn_loop(
        T::NAME.to_owned(),
        context.with_config(config),
        None,
        timer,
        |t| async move {
            Ok(if t.round().await? {
                Outcome::Progressed(0)
            } else {
                Outcome::Idle
            })
        },
    )
}

/// A worker that follows the feed: its loop runs `step` again and again, woken by a commit
/// (`notify`) or after the poll interval.
pub trait FeedWorker: Send + Sync + 'static {
    /// The worker's name in [`Health`].
    fn name(&self) -> &str;

    /// Handles what is new.
    fn step(&self) -> impl Future<Output = anyhow::Result<Outcome>> + Send;

    /// Spawns the worker's loop.
    fn spawn(
        self: Arc<Self>,
        notify: Option<Arc<Notify>>,
        context: LoopContext,
    ) -> tokio::task::JoinHandle<()>
    where
        Self: Sized,
    {
        let name = self.name().to_owned();
        spawn_loop(
            name,
            context,
            notify,
            self,
            |me| async move { me.step().await },
        )
    }
}

/// One step of a projection runner, as a worker outcome.
pub async fn projection_step(runner: &ProjectionRunner) -> anyhow::Result<Outcome> {
    Ok(match runner.step_deferred().await? {
        StepOutcome::Idle => Outcome::Idle,
        StepOutcome::Progressed { position, .. } => Outcome::Progressed(position.count()),
    })
}

/// The name a projection's worker has in [`Health`] (and so in `/readyz` and the metrics).
pub fn projection_worker(projection: &str) -> String {
    format!("projection:{projection}")
}

/// Spawns the loop of one projection.
pub fn spawn_projection(
    runner: Arc<ProjectionRunner>,
    notify: Option<Arc<Notify>>,
    context: LoopContext,
) -> tokio::task::JoinHandle<()> {
    let name = projection_worker(runner.name());
    spawn_loop(name, context, notify, runner, |runner| async move {
        projection_step(&runner).await
    })
}

/// The process-manager feed consumer: reads the feed after its checkpoint and hands every
/// relevant event to the process managers, in order. The checkpoint moves only past events
/// that were handled, so a failing event is retried, never skipped.
///
/// Pages without a relevant event do not write the checkpoint until it would lag by
/// [`projections::runner::CHECKPOINT_LAG`] positions: after a crash, those events are read again
/// and ignored again.
pub struct ProcessManagerConsumer {
    name: String,
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    managers: Arc<ProcessManagers>,
    batch: usize,
    /// (position reached, checkpoint written); `None` until read from the checkpoint store.
    cursor: tokio::sync::Mutex<Option<(FeedCursor, FeedCursor)>>,
}

impl ProcessManagerConsumer {
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        managers: Arc<ProcessManagers>,
        batch: usize,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            checkpoints,
            managers,
            batch,
            cursor: tokio::sync::Mutex::new(None),
        }
    }
}

impl FeedWorker for ProcessManagerConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn step(&self) -> anyhow::Result<Outcome> {
        let mut cursor = self.cursor.lock().await;
        let (after, durable) = match &*cursor {
            Some(c) => c.clone(),
            None => {
                let at = self.checkpoints.get(&self.name).await?;
                (at.clone(), at)
            }
        };
        *cursor = Some((after.clone(), durable.clone()));
        let page = self
            .store
            .feed_filtered(commands::FeedFilter {
                after: &after,
                limit: self.batch.max(1),
                keep: &ProcessManagers::handles,
            })
            .await?;
        let Some(last) = page.next else {
            return Ok(Outcome::Idle);
        };
        // Past each handled event in its partition; the events the filter dropped need nothing.
        let mut reached = after.clone();
        let mut handled = false;
        for event in &page.events {
            let position = event
                .global_position
                .ok_or_else(|| anyhow::anyhow!("feed event without a position"))?;
            if let Err(err) = self.managers.handle(event).await {
                *cursor = None;
                if reached != after {
                    self.checkpoints.set(&self.name, &reached).await?;
                }
                return Err(anyhow::Error::new(err).context(format!(
                    "process manager failed on {} at position {position}",
                    event.event_type
                )));
            }
            handled = true;
            reached.advance(position);
        }
        let reached = reached.max(&last);
        if handled || durable.behind(&reached) >= projections::runner::CHECKPOINT_LAG {
            if let Err(err) = self.checkpoints.set(&self.name, &reached).await {
                *cursor = None;
                return Err(err.into());
            }
            *cursor = Some((reached.clone(), reached.clone()));
        } else {
            *cursor = Some((reached.clone(), durable));
        }
        Ok(Outcome::Progressed(reached.count()))
    }
}
