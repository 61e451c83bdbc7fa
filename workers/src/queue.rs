//! Queue consumers: one per consumer group (a projection, or the process managers), reading
//! its [`EventQueue`] (SQS behind an EventBridge rule on AWS).
//!
//! Delivery is at least once and in any order, so each step:
//!
//! - receives up to `max_messages` (long poll);
//! - sorts the batch by (occurred_at, stream, sequence), which saves gap fills, then applies it:
//!   a projection through [`ProjectionRunner::apply_with_gap_fill`] (duplicates skipped, gaps
//!   filled from the event store, writes conditional on the applied sequence), the process
//!   managers event by event through [`ProcessManagers::handle`] (idempotent by command id);
//! - deletes a message only after its effect committed. When a projection's batch fails, its
//!   messages are applied one by one so that one bad message does not hold the others back;
//!   a message that still fails is left alone. It comes back after the visibility timeout and,
//!   after the queue's maximum receive count, the redrive policy moves it to the dead-letter
//!   queue. The same holds for a body that does not decode into an event.
//!
//! Shutdown: the loop stops between steps when its token is cancelled. A step that sees the
//! token after receiving releases the messages it has not processed (visibility 0) instead of
//! processing them; one already processing finishes the message at hand first.

use crate::feed::{spawn_loop, LoopContext, Outcome};
use commands::{EventEnvelope, EventQueue, ProcessManagers};
use projections::runner::ProjectionRunner;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a consumer does with its events.
#[derive(Clone)]
pub enum QueueHandler {
    /// Keep one read model up to date.
    Projection(Arc<ProjectionRunner>),
    /// Run the process managers.
    ProcessManagers(Arc<ProcessManagers>),
}

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct QueueConsumerConfig {
    /// Messages per receive (SQS allows 1 to 10).
    pub max_messages: usize,
    /// Long-poll wait of a receive (SQS allows up to 20 s). A stopping consumer may wait this
    /// long for its last receive to return.
    pub wait: Duration,
    /// Visibility timeout of received messages; `None` keeps the queue's own.
    pub visibility: Option<Duration>,
}

impl Default for QueueConsumerConfig {
    fn default() -> Self {
        Self {
            max_messages: 10,
            wait: Duration::from_secs(10),
            visibility: None,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStep {
    pub received: usize,
    /// Deleted after their effect committed (or because the handler has nothing to do with
    /// them).
    pub deleted: usize,
    /// Left for redelivery (and, eventually, the dead-letter queue) after failing.
    pub failed: usize,
    /// Bodies that are not events: left for the dead-letter queue.
    pub undecodable: usize,
    /// Released unprocessed (visibility 0) because the consumer is stopping.
    pub released: usize,
}

/// A consumer of one queue. Share it behind an `Arc` and [`spawn`](Self::spawn) it.
pub struct QueueConsumer {
    name: String,
    queue: Arc<dyn EventQueue>,
    handler: QueueHandler,
    config: QueueConsumerConfig,
    deleted: AtomicU64,
    /// Reveals the personal fields the bus carries sealed, as the event store's readers see
    /// them (`None`: the queue carries them as they are).
    pii: Option<commands::Pii>,
}

struct Delivery {
    receipt: String,
    message_id: String,
    receive_count: u32,
    event: EventEnvelope,
}

impl QueueConsumer {
    /// `name` is the worker's health name, for example `queue:catalog`.
    pub fn new(
        name: impl Into<String>,
        queue: Arc<dyn EventQueue>,
        handler: QueueHandler,
        config: QueueConsumerConfig,
    ) -> Self {
        Self {
            name: name.into(),
            queue,
            handler,
            config,
            deleted: AtomicU64::new(0),
            pii: None,
        }
    }

    /// Reveals each message's personal fields with `pii` before the handler sees it.
    pub fn revealing(mut self, pii: commands::Pii) -> Self {
        self.pii = Some(pii);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One receive and its processing, as a worker outcome: `Progressed(total deleted)` when a
    /// message was deleted, `Idle` when nothing came (or the consumer is stopping), an error
    /// when every message of the batch failed (the loop then backs off).
    pub async fn step(&self, cancel: &CancellationToken) -> anyhow::Result<Outcome> {
        let done = self.step_detailed(cancel).await?;
        if done.deleted > 0 {
            let total = self
                .deleted
                .fetch_add(done.deleted as u64, Ordering::Relaxed)
                + done.deleted as u64;
            return Ok(Outcome::Progressed(total));
        }
        if done.failed + done.undecodable > 0 {
            anyhow::bail!(
                "{} of {} messages failed ({} undecodable); they are left for redelivery",
                done.failed + done.undecodable,
                done.received,
                done.undecodable
            );
        }
        Ok(Outcome::Idle)
    }

    /// [`step`](Self::step) with counts.
    #[tracing::instrument(skip_all, fields(worker = %self.name, received), err(Display))]
    pub async fn step_detailed(&self, cancel: &CancellationToken) -> anyhow::Result<QueueStep> {
        let mut done = QueueStep::default();
        if cancel.is_cancelled() {
            return Ok(done);
        }
        let messages = self
            .queue
            .receive(commands::Receive {
                max: self.config.max_messages.clamp(1, 10),
                wait: self.config.wait,
                visibility: self.config.visibility,
            })
            .await?;
        done.received = messages.len();
        tracing::Span::current().record("received", messages.len());
        if messages.is_empty() {
            if matches!(self.handler, QueueHandler::Projection(_)) {
                metrics::gauge!(crate::health::PROJECTION_LAG_SECONDS, "worker" => self.name.clone())
                    .set(0.0);
            }
            return Ok(done);
        }
        let mut deliveries = Vec::with_capacity(messages.len());
        for m in messages {
            match m.event {
                Ok(event) => deliveries.push(Delivery {
                    receipt: m.receipt,
                    message_id: m.message_id,
                    receive_count: m.receive_count,
                    event,
                }),
                Err(why) => {
                    done.undecodable += 1;
                    tracing::warn!(
                        worker = %self.name,
                        message_id = %m.message_id,
                        receive_count = m.receive_count,
                        error = %why,
                        "undecodable message left for the dead-letter queue"
                    );
                }
            }
        }
        if cancel.is_cancelled() {
            done.released = self.release(deliveries.iter()).await;
            return Ok(done);
        }
        if let Some(pii) = &self.pii {
            for d in &mut deliveries {
                if let Err(err) = pii.reveal(&mut d.event).await {
                    // The key store is out of reach: nothing is handled, all comes back later.
                    let released = self.release(deliveries.iter()).await;
                    return Err(anyhow::anyhow!(
                        "revealing personal data failed ({released} messages released): {err}"
                    ));
                }
            }
        }
        deliveries.sort_by(|a, b| {
            let key = |d: &Delivery| {
                (
                    d.event.occurred_at,
                    d.event.stream_type.as_str(),
                    d.event.stream_id.clone(),
                    d.event.sequence,
                )
            };
            key(a).cmp(&key(b))
        });

        let (acked, failed, unprocessed) = match &self.handler {
            QueueHandler::Projection(runner) => self.apply(runner, deliveries, cancel).await,
            QueueHandler::ProcessManagers(managers) => {
                self.handle(managers, deliveries, cancel).await
            }
        };
        done.failed = failed;
        done.released = self.release(unprocessed.iter()).await;
        if !acked.is_empty() {
            let receipts: Vec<String> = acked.iter().map(|d| d.receipt.clone()).collect();
            let kept = self.queue.delete(&receipts).await?;
            if !kept.is_empty() {
                // Harmless: they come back and are skipped as duplicates.
                tracing::warn!(worker = %self.name, count = kept.len(), "some handled messages could not be deleted");
            }
            done.deleted = receipts.len() - kept.len();
        }
        metrics::counter!("backbone_queue_messages_total", "worker" => self.name.clone(), "result" => "deleted").increment(done.deleted as u64);
        metrics::counter!("backbone_queue_messages_total", "worker" => self.name.clone(), "result" => "failed").increment((done.failed + done.undecodable) as u64);
        Ok(done)
    }

    /// Applies a projection's deliveries; returns (committed, failed count, not processed).
    async fn apply(
        &self,
        runner: &ProjectionRunner,
        deliveries: Vec<Delivery>,
        cancel: &CancellationToken,
    ) -> (Vec<Delivery>, usize, Vec<Delivery>) {
        let events: Vec<EventEnvelope> = deliveries.iter().map(|d| d.event.clone()).collect();
        let newest = events.iter().map(|e| e.occurred_at).max();
        let err = match runner.apply_with_gap_fill(events).await {
            Ok(summary) => {
                // The lag of a queue consumer: how long ago the newest event it applied was
                // committed (a feed position means nothing to it).
                if let Some(newest) = newest {
                    let lag = (chrono::Utc::now() - newest).num_milliseconds().max(0) as f64;
                    metrics::gauge!(crate::health::PROJECTION_LAG_SECONDS, "worker" => self.name.clone())
                        .set(lag / 1e3);
                }
                tracing::debug!(worker = %self.name, applied = summary.applied, skipped = summary.skipped, filled = summary.filled, "batch applied");
                return (deliveries, 0, Vec::new());
            }
            Err(err) => err,
        };
        if deliveries.len() == 1 {
            self.log_failure(&deliveries[0], &err);
            return (Vec::new(), 1, Vec::new());
        }
        tracing::warn!(worker = %self.name, error = %err, messages = deliveries.len(), "batch failed, applying its messages one by one");
        self.one_by_one(deliveries, cancel, |event| async move {
            runner.apply_with_gap_fill(vec![event]).await.map(drop)
        })
        .await
    }

    /// Runs the process managers on each delivery in turn.
    async fn handle(
        &self,
        managers: &ProcessManagers,
        deliveries: Vec<Delivery>,
        cancel: &CancellationToken,
    ) -> (Vec<Delivery>, usize, Vec<Delivery>) {
        self.one_by_one(deliveries, cancel, |event| async move {
            if !ProcessManagers::handles(&event) {
                return Ok(());
            }
            managers.handle(&event).await.map(drop)
        })
        .await
    }

    /// Runs `step` on each delivery's event in turn, until `cancel`: returns the handled
    /// deliveries, the failure count and the deliveries not tried.
    async fn one_by_one<F, Fut, E>(
        &self,
        deliveries: Vec<Delivery>,
        cancel: &CancellationToken,
        mut step: F,
    ) -> (Vec<Delivery>, usize, Vec<Delivery>)
    where
        F: FnMut(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut acked = Vec::new();
        let mut failed = 0;
        let mut rest = deliveries.into_iter();
        for d in rest.by_ref() {
            match step(d.event.clone()).await {
                Ok(()) => acked.push(d),
                Err(err) => {
                    self.log_failure(&d, &err);
                    failed += 1;
                }
            }
            if cancel.is_cancelled() {
                break;
            }
        }
        (acked, failed, rest.collect())
    }

    fn log_failure(&self, d: &Delivery, err: &dyn std::fmt::Display) {
        tracing::warn!(
            worker = %self.name,
            message_id = %d.message_id,
            receive_count = d.receive_count,
            event_id = %d.event.event_id,
            event_type = %d.event.event_type,
            stream = %d.event.stream(),
            sequence = d.event.sequence,
            correlation_id = %d.event.metadata.correlation_id,
            error = %err,
            "message failed, left for redelivery"
        );
    }

    /// Makes deliveries visible again at once; returns how many were released.
    async fn release<'a>(&self, deliveries: impl Iterator<Item = &'a Delivery>) -> usize {
        let mut released = 0;
        for d in deliveries {
            match self
                .queue
                .change_visibility(&d.receipt, Duration::ZERO)
                .await
            {
                Ok(()) => released += 1,
                // It comes back after its visibility timeout instead.
                Err(err) => {
                    tracing::warn!(worker = %self.name, message_id = %d.message_id, error = %err, "cannot release a message")
                }
            }
        }
        if released > 0 {
            tracing::info!(worker = %self.name, released, "released unprocessed messages");
        }
        released
    }

    /// Spawns the consumer loop. Give it a short `config.poll`: an empty receive has already
    /// waited its long poll.
    pub fn spawn(self: Arc<Self>, context: LoopContext) -> tokio::task::JoinHandle<()> {
        let name = self.name.clone();
        let token = context.cancel.clone();
        spawn_loop(name, context, None, self, move |me| {
            let token = token.clone();
            async move { me.step(&token).await }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use commands::{EventStore, FanoutError, Metadata, QueuedEvent};
    use domain::StreamType;
    use projections::testsuite::event_store::VecEventStore;
    use projections::{MemoryReadModelStore, ReadModelStore};
    use std::sync::Mutex;

    /// Hands out its messages once each; records deletes and releases.
    #[derive(Default)]
    struct FakeQueue {
        inbox: Mutex<Vec<QueuedEvent>>,
        deleted: Mutex<Vec<String>>,
        released: Mutex<Vec<String>>,
        /// Cancelled while a receive is in flight (a SIGTERM during the long poll).
        cancel_on_receive: Option<CancellationToken>,
    }

    #[async_trait]
    impl EventQueue for FakeQueue {
        async fn receive(
            &self,
            request: commands::Receive,
        ) -> Result<Vec<QueuedEvent>, FanoutError> {
            if let Some(token) = &self.cancel_on_receive {
                token.cancel();
            }
            let mut inbox = self.inbox.lock().unwrap();
            let n = request.max.min(inbox.len());
            Ok(inbox.drain(..n).collect())
        }
        async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, FanoutError> {
            self.deleted
                .lock()
                .unwrap()
                .extend(receipts.iter().cloned());
            Ok(Vec::new())
        }
        async fn change_visibility(&self, receipt: &str, _t: Duration) -> Result<(), FanoutError> {
            self.released.lock().unwrap().push(receipt.to_owned());
            Ok(())
        }
    }

    fn first_product_created() -> EventEnvelope {
        projections::testsuite::fixtures::scenario(7, 40)
            .into_iter()
            .find(|e| e.stream_type == StreamType::Product && e.sequence == 1)
            .expect("the scenario creates products")
    }

    fn product_event(
        id: &str,
        seq: u64,
        event_type: &str,
        payload: serde_json::Value,
    ) -> EventEnvelope {
        EventEnvelope {
            global_position: None,
            event_id: uuid::Uuid::now_v7(),
            stream_type: StreamType::Product,
            stream_id: id.into(),
            sequence: seq,
            event_type: event_type.into(),
            event_version: 1,
            occurred_at: chrono::Utc::now(),
            payload: payload.into(),
            metadata: Metadata::default(),
        }
    }

    fn message(i: usize, event: Result<EventEnvelope, String>) -> QueuedEvent {
        QueuedEvent {
            receipt: format!("r{i}"),
            message_id: format!("m{i}"),
            receive_count: 1,
            event,
        }
    }

    fn consumer(queue: Arc<FakeQueue>, models: Arc<MemoryReadModelStore>) -> QueueConsumer {
        let store: Arc<dyn EventStore> = Arc::new(VecEventStore::new());
        let runner = ProjectionRunner::new(
            store,
            models,
            Arc::new(projections::catalog::CatalogProjection),
            100,
        );
        QueueConsumer::new(
            "queue:catalog",
            queue,
            QueueHandler::Projection(Arc::new(runner)),
            QueueConsumerConfig::default(),
        )
    }

    #[tokio::test]
    async fn a_poison_message_is_left_while_the_rest_of_its_batch_is_applied_and_deleted() {
        let queue = Arc::new(FakeQueue::default());
        let models = Arc::new(MemoryReadModelStore::new());
        let created = first_product_created();
        let id = created.stream_id.clone();
        *queue.inbox.lock().unwrap() = vec![
            message(0, Ok(created)),
            message(
                1,
                Ok(product_event(
                    "prd_b",
                    1,
                    "ProductCreated",
                    serde_json::json!({"nonsense": true}),
                )),
            ),
            message(2, Err("not json".into())),
        ];
        let c = consumer(queue.clone(), models.clone());
        let done = c.step_detailed(&CancellationToken::new()).await.unwrap();
        assert_eq!(done.received, 3);
        assert_eq!(done.deleted, 1);
        assert_eq!(done.failed, 1);
        assert_eq!(done.undecodable, 1);
        assert_eq!(*queue.deleted.lock().unwrap(), vec!["r0".to_string()]);
        assert!(models
            .get(projections::catalog::PRODUCTS, &id)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn a_stopping_consumer_releases_what_it_received_instead_of_processing_it() {
        let cancel = CancellationToken::new();
        let queue = Arc::new(FakeQueue {
            cancel_on_receive: Some(cancel.clone()),
            ..FakeQueue::default()
        });
        let models = Arc::new(MemoryReadModelStore::new());
        let created = first_product_created();
        let id = created.stream_id.clone();
        *queue.inbox.lock().unwrap() = vec![message(0, Ok(created))];
        let c = consumer(queue.clone(), models.clone());
        let done = c.step_detailed(&cancel).await.unwrap();
        assert_eq!(done.released, 1);
        assert_eq!(*queue.released.lock().unwrap(), vec!["r0".to_string()]);
        assert!(queue.deleted.lock().unwrap().is_empty());
        assert!(models
            .get(projections::catalog::PRODUCTS, &id)
            .await
            .unwrap()
            .is_none());
        // Once stopped, it does not receive again.
        assert_eq!(
            c.step_detailed(&cancel).await.unwrap(),
            QueueStep::default()
        );
    }
}
