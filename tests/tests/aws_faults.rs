//! Fault tests of the AWS fan-out on moto, each on its own fresh stage: a worker killed mid-batch,
//! duplicated and shuffled deliveries, a poison event, a relay restarted mid-shard, and a new
//! projection catching up from the durable feed.

use api::compose_aws::{AwsOptions, AwsStage};
use async_trait::async_trait;
use backbone_tests::aws::{
    drain_queue, drain_relay, fresh_stage, fresh_stage_with, in_order_reference, only, queue_depth,
    queue_url, read_model_doc, run_consumer_until_empty, run_workload, send_bodies, send_events,
    stream_and_checkpoints, table_event_ids, test_options, test_workers,
};
use backbone_tests::{eventually, whole_feed};
use commands::{
    EventEnvelope, EventPublisher, EventQueue, FanoutError, PublishFailure, QueuedEvent,
    ShardCheckpointStore,
};
use commands::{FeedCursor, StreamRef};
use infrastructure::aws::{ConsumerGroup, DynamoReadModelStore};
use infrastructure::aws::{
    DynamoShardCheckpoints, DynamoStreamSource, EventBridgePublisher, SqsEventQueue, StreamsOptions,
};
use projections::store::{
    ApplyOutcome, DocKey, EncodedDoc, EventBatch, Projection, Query, ReadModelResult,
};
use projections::{ProjectionRunner, ReadModelStore, StepOutcome};
use rand::seq::SliceRandom;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use workers::{
    CancellationToken, Health, LoopContext, QueueConsumer, QueueHandler, Relay, RelayConfig,
};

const WAIT: Duration = Duration::from_secs(60);

fn relay_config(page_size: usize) -> RelayConfig {
    RelayConfig {
        page_size,
        ..test_workers().relay
    }
}

/// The relay of `stage` with `publisher` in place of EventBridge.
fn relay_with(stage: &AwsStage, publisher: Arc<dyn EventPublisher>, page_size: usize) -> Relay {
    let retry = stage.options.retry;
    Relay::new(
        Arc::new(DynamoStreamSource::new(
            stage.streams.clone(),
            stage.dynamodb.clone(),
            &stage.names,
            StreamsOptions {
                emulator_compat: true,
            },
            retry,
        )),
        Arc::new(DynamoShardCheckpoints::new(
            stage.dynamodb.clone(),
            &stage.names,
            retry,
        )),
        Arc::new(stage.dynamo_store.indexer().clone()),
        publisher,
        relay_config(page_size),
    )
}

/// A fresh stage after `run_workload(tag, orders, paid)`, with every event of it published by
/// the relay (so each queue holds the whole feed once).
async fn published_workload(tag: &str, orders: usize, paid: usize) -> AwsStage {
    let stage = fresh_stage().await;
    run_workload(&stage.shop, tag, orders, paid).await;
    drain_relay(&stage.relay(relay_config(200))).await;
    stage
}

/// Runs a consumer of `group` (the test configuration) until its queue is empty.
async fn consume_until_empty(stage: &AwsStage, group: ConsumerGroup) {
    let consumer = stage
        .consumer(group, test_workers().consumer)
        .await
        .unwrap();
    run_consumer_until_empty(stage, group, &consumer, WAIT).await;
}

fn projection_of(group: ConsumerGroup) -> Arc<dyn Projection> {
    AwsStage::projection(group).expect("a projection group")
}

/// The projection's documents in the stage's read-model tables.
async fn dynamo_dump(stage: &AwsStage, projection: &dyn Projection) -> projections::store::Dump {
    only(stage.models.dump().await.expect("dump"), projection)
}

/// Waits until the projection's documents in DynamoDB equal `expected`.
/// Runs `consumer` until it signals `reached`, then kills its task as a crash would.
async fn kill_when_reached(
    consumer: Arc<QueueConsumer>,
    reached: &Notify,
    health: &Health,
    what: &str,
) {
    let context = LoopContext::new(
        health.clone(),
        CancellationToken::new(),
        test_workers().consumer_loop,
    );
    let task = consumer.spawn(context);
    tokio::time::timeout(WAIT, reached.notified())
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    task.abort();
    let _ = task.await;
}

async fn converges(
    stage: &AwsStage,
    projection: &dyn Projection,
    expected: &projections::store::Dump,
) {
    let got = eventually(WAIT, || async {
        let dump = dynamo_dump(stage, projection).await;
        (&dump == expected).then_some(dump)
    })
    .await;
    if got.is_none() {
        let dump = dynamo_dump(stage, projection).await;
        let missing: Vec<_> = expected.keys().filter(|k| !dump.contains_key(*k)).collect();
        let extra: Vec<_> = dump.keys().filter(|k| !expected.contains_key(*k)).collect();
        let differ: Vec<_> = expected
            .iter()
            .filter(|(k, v)| dump.get(*k).is_some_and(|d| d != *v))
            .map(|(k, v)| (k, v, dump.get(k)))
            .take(3)
            .collect();
        panic!(
            "{} read model never matched in-order delivery: missing {missing:?}, extra {extra:?}, differing {differ:#?}",
            projection.name()
        );
    }
}

/// The stage's SQS queue with one fault injected.
struct FaultyQueue {
    inner: SqsEventQueue,
    fault: QueueFault,
}

enum QueueFault {
    /// `delete` signals and then never returns: the worker has committed its write but not
    /// deleted the message when the test kills it.
    StuckBeforeDelete { reached: Arc<Notify> },
    /// The stop signal fires while a receive is in flight (a SIGTERM arriving during the long
    /// poll).
    StopDuringReceive { cancel: CancellationToken },
}

#[async_trait]
impl EventQueue for FaultyQueue {
    async fn receive(&self, request: commands::Receive) -> Result<Vec<QueuedEvent>, FanoutError> {
        let got = self.inner.receive(request).await;
        if let QueueFault::StopDuringReceive { cancel } = &self.fault {
            cancel.cancel();
        }
        got
    }
    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, FanoutError> {
        if let QueueFault::StuckBeforeDelete { reached } = &self.fault {
            reached.notify_one();
            return std::future::pending().await;
        }
        self.inner.delete(receipts).await
    }
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), FanoutError> {
        self.inner.change_visibility(receipt, timeout).await
    }
}

/// A read-model store whose `apply_batch` signals and then never returns: the worker is killed
/// with a batch received and its write not committed.
struct StuckBeforeCommit {
    reached: Arc<Notify>,
}

#[async_trait]
impl ReadModelStore for StuckBeforeCommit {
    async fn apply_batch(&self, _batch: EventBatch) -> ReadModelResult<ApplyOutcome> {
        self.reached.notify_one();
        std::future::pending().await
    }
    async fn checkpoint(&self, _projection: &str) -> ReadModelResult<FeedCursor> {
        Ok(FeedCursor::start())
    }
    async fn last_applied(&self, _projection: &str, _stream: &StreamRef) -> ReadModelResult<u64> {
        Ok(0)
    }
    async fn get(&self, _c: &str, _k: &str) -> ReadModelResult<Option<Value>> {
        Ok(None)
    }
    async fn query(&self, _query: Query<'_>) -> ReadModelResult<Vec<Value>> {
        Ok(Vec::new())
    }
    async fn put_doc(&self, _at: DocKey<'_>, _doc: EncodedDoc) -> ReadModelResult<()> {
        Ok(())
    }
    async fn reset(&self, _projection: &dyn Projection) -> ReadModelResult<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_and_restarted_loses_and_doubles_no_read_model_change() {
    let stage = published_workload("kill", 6, 3).await;
    let feed = whole_feed(stage.store.as_ref()).await;
    let group = ConsumerGroup::OrderHistory;
    let projection = projection_of(group);
    let expected = in_order_reference(&stage, projection.clone(), &feed).await;
    assert!(!expected.is_empty());
    let config = test_workers().consumer;
    let health = Health::default();
    // Keep only the events this projection handles in its queue, so that every batch the
    // doomed workers receive changes the read model.
    let url = queue_url(&stage, group, false).await;
    assert_eq!(drain_queue(&stage, &url).await.len(), feed.len());
    let relevant: Vec<EventEnvelope> = feed
        .iter()
        .filter(|e| projection.handles(e))
        .map(|e| EventEnvelope {
            global_position: None,
            ..e.clone()
        })
        .collect();
    send_events(&stage, &url, &relevant).await;

    // 1. Killed after receiving, before its write commits.
    let reached = Arc::new(Notify::new());
    let stuck_models: Arc<dyn ReadModelStore> = Arc::new(StuckBeforeCommit {
        reached: reached.clone(),
    });
    let doomed = Arc::new(QueueConsumer::new(
        "queue:order-history",
        Arc::new(stage.queue(group).await.unwrap()),
        QueueHandler::Projection(Arc::new(ProjectionRunner::new(
            stage.store.clone(),
            stuck_models,
            projection.clone(),
            500,
        ))),
        config.clone(),
    ));
    kill_when_reached(doomed, &reached, &health, "the worker received a batch").await;
    assert!(
        dynamo_dump(&stage, projection.as_ref()).await.is_empty(),
        "nothing committed"
    );

    // 2. Killed after its write committed, before it deleted the messages.
    let reached = Arc::new(Notify::new());
    let doomed = Arc::new(QueueConsumer::new(
        "queue:order-history",
        Arc::new(FaultyQueue {
            inner: stage.queue(group).await.unwrap(),
            fault: QueueFault::StuckBeforeDelete {
                reached: reached.clone(),
            },
        }),
        stage.handler(group),
        config,
    ));
    kill_when_reached(doomed, &reached, &health, "the worker committed a batch").await;
    let partial = dynamo_dump(&stage, projection.as_ref()).await;
    assert!(
        !partial.is_empty(),
        "the killed worker committed its first batch"
    );

    // 3. Restarted: the messages come back after their visibility timeout; what was applied is
    // skipped, the rest applied once.
    consume_until_empty(&stage, group).await;
    let after = dynamo_dump(&stage, projection.as_ref()).await;
    assert_eq!(
        after, expected,
        "no lost or doubled changes after the restart"
    );
    // Order timelines have one entry per event: a doubled apply would have shown there.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_shuffled_deliveries_give_the_same_read_models_as_in_order_delivery() {
    let stage = published_workload("shuf", 5, 3).await;
    let feed = whole_feed(stage.store.as_ref()).await;
    assert!(feed.len() > 30, "{} events", feed.len());
    let groups = [
        ConsumerGroup::Catalog,
        ConsumerGroup::OrderHistory,
        ConsumerGroup::Notifications,
        ConsumerGroup::Support,
    ];
    for group in groups {
        let url = queue_url(&stage, group, false).await;
        // Drop the relay's own (in-order) deliveries, then deliver every event once or twice,
        // shuffled.
        let natural = drain_queue(&stage, &url).await;
        assert_eq!(
            natural.len(),
            feed.len(),
            "{group}: the rule delivered every event once"
        );
        let mut deliveries: Vec<EventEnvelope> = feed.clone();
        deliveries.extend(feed.iter().step_by(2).cloned());
        deliveries.extend(feed.iter().skip(1).step_by(3).cloned());
        deliveries.shuffle(&mut rand::rng());
        // Without feed positions, as the relay publishes them.
        for d in &mut deliveries {
            d.global_position = None;
        }
        send_events(&stage, &url, &deliveries).await;
    }
    for group in groups {
        let projection = projection_of(group);
        consume_until_empty(&stage, group).await;
        let expected = in_order_reference(&stage, projection.clone(), &feed).await;
        assert!(!expected.is_empty(), "{group}");
        converges(&stage, projection.as_ref(), &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_lands_in_the_dlq_after_max_receive_count_while_other_events_keep_flowing() {
    let stage = fresh_stage().await;
    let group = ConsumerGroup::OrderHistory;
    let url = queue_url(&stage, group, false).await;
    let dlq = queue_url(&stage, group, true).await;

    // An OrderPlaced whose payload the projection cannot decode.
    let poison = EventEnvelope {
        global_position: None,
        event_id: uuid::Uuid::now_v7(),
        stream_type: domain::StreamType::Order,
        stream_id: "ord_poison".into(),
        sequence: 1,
        event_type: "OrderPlaced".into(),
        event_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: serde_json::json!({ "not": "an order" }).into(),
        metadata: commands::Metadata::default(),
    };
    send_events(&stage, &url, std::slice::from_ref(&poison)).await;
    // And a body that is no event at all.
    send_bodies(
        &stage,
        &url,
        &["{\"this is\": \"not an event\"}".to_string()],
    )
    .await;

    let cancel = CancellationToken::new();
    let health = Health::default();
    let mut workers = test_workers();
    workers.consumer.visibility = Some(Duration::from_secs(1));
    let tasks = api::compose_aws::spawn_workers(&stage, &workers, &health, &cancel)
        .await
        .unwrap();

    // Other events keep flowing meanwhile.
    let w = run_workload(&stage.shop, "poison", 4, 2).await;
    for order in &w.orders {
        let found = eventually(WAIT, || {
            read_model_doc(&stage, projections::order_history::ORDERS, order)
        })
        .await;
        assert!(
            found.is_some(),
            "order {order} never reached the order history"
        );
    }

    // Both poison messages end in the DLQ after 5 receives (the sixth receive moves them).
    let dead = eventually(WAIT, || async {
        let (visible, _) = queue_depth(&stage, &dlq).await;
        (visible >= 2).then_some(visible)
    })
    .await
    .expect("the poison messages reach the dead-letter queue");
    assert_eq!(dead, 2);
    let dead = drain_queue(&stage, &dlq).await;
    let ids: Vec<_> = dead
        .iter()
        .filter_map(|m| m.event.as_ref().ok().map(|e| e.event_id))
        .collect();
    assert_eq!(ids, vec![poison.event_id]);
    assert_eq!(dead.iter().filter(|m| m.event.is_err()).count(), 1);
    assert!(stage
        .models
        .get(projections::order_history::ORDERS, "ord_poison")
        .await
        .unwrap()
        .is_none());
    // The paid orders got paid through the process managers' queue.
    for order in &w.paid {
        let paid = eventually(WAIT, || async {
            let doc = read_model_doc(&stage, projections::order_history::ORDERS, order).await?;
            (doc["status"] == "paid").then_some(())
        })
        .await;
        assert!(paid.is_some(), "order {order} never became paid");
    }
    let drained = eventually(WAIT, || async {
        (queue_depth(&stage, &url).await == (0, 0)).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the main queue is drained");
    cancel.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

/// EventBridge that accepts the first `ok_calls` publishes, then fails every later one.
struct FailingAfter {
    inner: EventBridgePublisher,
    ok_calls: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait]
impl EventPublisher for FailingAfter {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<Vec<PublishFailure>, FanoutError> {
        if self.failing.load(Ordering::SeqCst) || self.ok_calls.load(Ordering::SeqCst) == 0 {
            self.failing.store(true, Ordering::SeqCst);
            return Err(FanoutError::Permanent("the relay process died here".into()));
        }
        self.ok_calls.fetch_sub(1, Ordering::SeqCst);
        self.inner.publish(events).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_restarted_mid_shard_resumes_from_its_checkpoint_without_losing_events() {
    // The page arithmetic below counts stream records as events: no snapshot items here.
    let stage = fresh_stage_with(AwsOptions {
        service: commands::ServiceConfig::default(),
        ..test_options()
    })
    .await;
    run_workload(&stage.shop, "relay", 4, 2).await;
    let table = table_event_ids(&stage).await;
    assert!(table.len() > 25, "{} events", table.len());
    let eventbridge = EventBridgePublisher::new(
        stage.eventbridge.clone(),
        stage.names.event_bus.clone(),
        stage.options.retry,
    );

    // Relay A: one page of 12 goes through (two publishes), then it dies halfway through the
    // second page (its first batch of 10 is published, the second is not).
    let a = relay_with(
        &stage,
        Arc::new(FailingAfter {
            inner: eventbridge.clone(),
            ok_calls: AtomicUsize::new(3),
            failing: AtomicBool::new(false),
        }),
        12,
    );
    let (_, first) = a.step_detailed().await.expect("first page");
    assert_eq!(first.records, 12);
    assert!(a.step().await.is_err(), "relay A dies on its second page");
    drop(a);
    let (source, checkpoints) = stream_and_checkpoints(&stage);
    let shards = commands::ChangeSource::shards(&source).await.unwrap();
    assert_eq!(shards.len(), 1, "moto has one shard per stream");
    let saved = checkpoints
        .load(&shards[0].id)
        .await
        .unwrap()
        .expect("a checkpoint");
    assert!(saved.sequence.is_some() && !saved.finished);

    // More commits while no relay runs.
    run_workload(&stage.shop, "relay2", 2, 1).await;

    // Relay B resumes after the checkpoint: every event reaches the feed once and the queue at
    // least once (the published half of A's second page comes again).
    let b = relay_with(&stage, Arc::new(eventbridge), 12);
    drain_relay(&b).await;
    let table = table_event_ids(&stage).await;
    let feed = whole_feed(stage.store.as_ref()).await;
    let feed_ids: Vec<String> = feed.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(
        feed_ids.iter().cloned().collect::<BTreeSet<_>>(),
        table,
        "nothing lost"
    );
    assert_eq!(feed_ids.len(), table.len(), "nothing indexed twice");
    let delivered = drain_queue(
        &stage,
        &queue_url(&stage, ConsumerGroup::Support, false).await,
    )
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for m in &delivered {
        let e = m.event.as_ref().expect("decodable");
        *counts.entry(e.event_id.to_string()).or_default() += 1;
    }
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        table,
        "every event delivered"
    );
    let twice = counts.values().filter(|n| **n > 1).count();
    assert_eq!(
        twice, 10,
        "exactly the published half of the failed page came twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_projection_started_from_zero_catches_up_from_the_durable_feed() {
    let stage = published_workload("late", 4, 2).await;
    // The live consumers keep the stage's read models.
    for group in [ConsumerGroup::OrderHistory, ConsumerGroup::Support] {
        consume_until_empty(&stage, group).await;
    }

    // A brand-new read-model store (the tables of another stack), fed from feed position 0,
    // never from the stream or the queues.
    let (fresh, _) = backbone_tests::aws::moto::fresh_stack().await;
    let late = Arc::new(DynamoReadModelStore::new(
        stage.dynamodb.clone(),
        &fresh,
        stage.options.retry,
    ));
    let head = stage.store.head().await.unwrap();
    assert_eq!(
        head.count() as usize,
        table_event_ids(&stage).await.len(),
        "the feed holds every event"
    );
    for group in [ConsumerGroup::OrderHistory, ConsumerGroup::Support] {
        let projection = projection_of(group);
        let models: Arc<dyn ReadModelStore> = late.clone();
        let runner = ProjectionRunner::new(stage.store.clone(), models, projection.clone(), 25);
        let mut steps = 0;
        while let StepOutcome::Progressed { .. } = runner.step().await.unwrap() {
            steps += 1;
        }
        assert!(
            steps >= (head.count() as usize).div_ceil(25),
            "read page by page"
        );
        assert_eq!(late.checkpoint(projection.name()).await.unwrap(), head);
        let caught_up = only(late.dump().await.unwrap(), projection.as_ref());
        assert_eq!(
            caught_up,
            dynamo_dump(&stage, projection.as_ref()).await,
            "{}: the late projection equals the live one",
            projection.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_releases_the_messages_it_received_at_once() {
    let stage = published_workload("stop", 1, 0).await;
    let group = ConsumerGroup::Catalog;
    let url = queue_url(&stage, group, false).await;
    let (waiting, _) = queue_depth(&stage, &url).await;
    assert!(waiting > 0);
    let cancel = CancellationToken::new();
    let mut config = test_workers().consumer;
    // Without the release they would stay invisible for a minute.
    config.visibility = Some(Duration::from_secs(60));
    let consumer = QueueConsumer::new(
        "queue:catalog",
        Arc::new(FaultyQueue {
            inner: stage.queue(group).await.unwrap(),
            fault: QueueFault::StopDuringReceive {
                cancel: cancel.clone(),
            },
        }),
        stage.handler(group),
        config,
    );
    let done = consumer.step_detailed(&cancel).await.unwrap();
    assert!(done.received > 0);
    assert_eq!(done.released, done.received, "{done:?}");
    assert_eq!(done.deleted, 0);
    assert_eq!(
        queue_depth(&stage, &url).await,
        (waiting, 0),
        "all visible again at once"
    );
    assert!(dynamo_dump(&stage, projection_of(group).as_ref())
        .await
        .is_empty());
}
