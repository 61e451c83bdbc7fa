//! Helpers of the AWS suites on moto: a fresh stage per test ([`fresh_stage`]), the AWS app over
//! HTTP ([`spawn_aws_app`]), a workload of real commands ([`run_workload`]), queue tools and
//! read-model comparisons.
//!
//! moto is started once per test binary by the infrastructure crate's harness ([`moto`]); it
//! panics with a clear message when `moto_server` is missing: AWS tests never skip.

#[path = "../../infrastructure/tests/support/moto.rs"]
pub mod moto;

use crate::TestApp;
use api::compose::ApiSettings;
use api::compose_aws::{self, AwsOptions, AwsServeConfig, AwsStage, AwsWorkerConfig};
use commands::{
    Caller, CheckoutInput, CommandContext, EventEnvelope, NewProduct, QueuedEvent, Shop,
};
use domain::{CustomerId, Money, PaymentCommand, ProductId, Quantity};
use infrastructure::aws::fanout::envelope::bus_message;
use infrastructure::aws::{ConsumerGroup, RetryPolicy, StackSpec};
use infrastructure::aws::{DynamoShardCheckpoints, DynamoStreamSource, StreamsOptions};
use projections::store::Dump;
use projections::{Projection, ReadModelStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use workers::{CancellationToken, LoopConfig, Outcome, QueueConsumerConfig, Relay, RelayConfig};

/// Adapter options for moto: emulator workarounds on, quick retries, and a snapshot every
/// three events, so that every AWS test also runs with snapshot items in the streams'
/// partitions (loads, the relay, the feed and the export must all see through them).
pub fn test_options() -> AwsOptions {
    AwsOptions {
        emulator_compat: true,
        service: commands::ServiceConfig {
            snapshot_every: 3,
            ..commands::ServiceConfig::default()
        },
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(300),
        },
        ..AwsOptions::default()
    }
}

/// Worker timing for tests: short polls and backoffs, 1 s long polls, a 2 s visibility
/// timeout so that an unfinished message comes back quickly.
pub fn test_workers() -> AwsWorkerConfig {
    AwsWorkerConfig {
        relay: RelayConfig {
            page_size: 200,
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(200),
            shard_refresh: Duration::from_secs(1),
            ..RelayConfig::default()
        },
        relay_loop: LoopConfig {
            poll: Duration::from_millis(50),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        },
        consumer: QueueConsumerConfig {
            max_messages: 10,
            wait: Duration::from_secs(1),
            visibility: Some(Duration::from_secs(2)),
        },
        consumer_loop: LoopConfig {
            poll: Duration::from_millis(10),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        },
        ..AwsWorkerConfig::default()
    }
}

/// A stage of its own on this binary's moto (names no other test uses), provisioned as
/// `backbone provision` does it: its stack deployed from the template.
pub async fn fresh_stage() -> AwsStage {
    fresh_stage_with(test_options()).await
}

/// [`fresh_stage`] with other adapter options.
pub async fn fresh_stage_with(options: AwsOptions) -> AwsStage {
    fresh_stage_partitioned(options, None).await
}

/// [`fresh_stage_with`] whose feed has `partitions` partitions (`None`: the default).
pub async fn fresh_stage_partitioned(options: AwsOptions, partitions: Option<u32>) -> AwsStage {
    let names = moto::fresh_names();
    let sdk = moto::sdk_config().await;
    crate::mail::verify_sender(&sdk).await;
    let stage = AwsStage::new(&sdk, &names.stage, options);
    let spec = StackSpec {
        feed_partitions: partitions,
        ..StackSpec::for_stage(&names.stage)
    };
    stage
        .provision(&spec)
        .await
        .unwrap_or_else(|e| panic!("provisioning a stage on moto: {e:#}"));
    stage
}

/// The AWS app over HTTP on 127.0.0.1:0, on a fresh stage (`provision: true` deploys its
/// stack from the template), with (when `with_workers`) the relay
/// and the five consumers in process. Returns once the demo catalog reached the catalog read
/// model through the whole fan-out.
pub async fn spawn_aws_app(with_workers: bool) -> (TestApp, AwsStage) {
    spawn_aws_app_configured(with_workers, |_| {}).await
}

/// [`spawn_aws_app`] with `customize` applied to its configuration (payments, say).
pub async fn spawn_aws_app_configured(
    with_workers: bool,
    customize: impl FnOnce(&mut AwsServeConfig),
) -> (TestApp, AwsStage) {
    let names = moto::fresh_names();
    let sdk = moto::sdk_config().await;
    crate::mail::verify_sender(&sdk).await;
    let secret = format!("test-secret-{}", uuid::Uuid::new_v4());
    let mut config = AwsServeConfig {
        options: test_options(),
        provision: true,
        with_workers,
        workers: test_workers(),
        api: ApiSettings {
            jwt_secret: Some(secret.clone()),
            // moto under a loaded test run can take seconds to move an event to a read model.
            consistency_wait: Duration::from_secs(10),
            ..ApiSettings::default()
        },
        ..AwsServeConfig::new(names.stage.clone())
    };
    customize(&mut config);
    let stripe = config.api.stripe.clone();
    let running = compose_aws::start_aws(&sdk, config)
        .await
        .unwrap_or_else(|e| panic!("starting the aws app on moto: {e:#}"));
    let stage = AwsStage::new(&sdk, &names.stage, test_options())
        .with_payments(stripe.as_ref())
        .expect("the app's payment settings");
    if with_workers {
        let settled = crate::eventually(Duration::from_secs(60), || async {
            for (id, ..) in api::compose::DEMO_CATALOG {
                read_model_doc(&stage, projections::catalog::PRODUCTS, id).await?;
            }
            Some(())
        })
        .await;
        assert!(
            settled.is_some(),
            "the demo catalog never reached the catalog read model"
        );
    }
    let app = TestApp::serve(
        running,
        tempfile::tempdir().expect("temp dir"),
        secret,
        Duration::from_secs(30),
    )
    .await;
    (app, stage)
}

/// Steps `relay` until a step finds nothing new; returns the records relayed.
pub async fn drain_relay(relay: &Relay) -> usize {
    let mut total = 0;
    for _ in 0..1_000 {
        match relay.step_detailed().await {
            Ok((Outcome::Idle, _)) => return total,
            Ok((_, step)) => total += step.records,
            Err(e) => panic!("relay step failed: {e}"),
        }
    }
    panic!("the relay never caught up");
}

/// What [`run_workload`] created.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub products: Vec<String>,
    pub orders: Vec<String>,
    /// Orders whose payment succeeded (the process managers then mark them paid).
    pub paid: Vec<String>,
    pub customers: Vec<String>,
}

fn ctx(tag: &str) -> CommandContext {
    CommandContext {
        metadata: commands::Metadata {
            correlation_id: format!("workload-{tag}"),
            actor: commands::Actor {
                subject: "workload".into(),
                role: "system".into(),
            },
            ..commands::Metadata::default()
        },
        idempotency: None,
    }
}

/// A checkout by `email` to the address of [`checkout_body`](crate::checkout_body): the same
/// order as the HTTP suites place, given to the shop directly.
pub fn checkout_input(email: &str) -> CheckoutInput {
    let body = crate::checkout_body(email);
    CheckoutInput {
        customer_email: email.to_owned(),
        shipping_address: serde_json::from_value(body["shipping_address"].clone())
            .expect("the checkout body's address"),
    }
}

/// The stage's events stream as the relay reads it on moto, and the relay's checkpoints.
pub fn stream_and_checkpoints(stage: &AwsStage) -> (DynamoStreamSource, DynamoShardCheckpoints) {
    let source = DynamoStreamSource::new(
        stage.streams.clone(),
        stage.dynamodb.clone(),
        &stage.names,
        StreamsOptions {
            emulator_compat: true,
        },
        stage.options.retry,
    );
    let checkpoints =
        DynamoShardCheckpoints::new(stage.dynamodb.clone(), &stage.names, stage.options.retry);
    (source, checkpoints)
}

/// Accepts every entry without sending it anywhere: a relay with it only indexes the feed.
pub struct NullPublisher;

#[async_trait::async_trait]
impl commands::EventPublisher for NullPublisher {
    async fn publish(
        &self,
        _events: &[EventEnvelope],
    ) -> Result<Vec<commands::PublishFailure>, commands::FanoutError> {
        Ok(Vec::new())
    }
}

/// A relay of `stage` that indexes the feed and publishes nothing (no queue receives events).
pub fn indexing_relay(stage: &AwsStage, config: RelayConfig) -> Relay {
    let (source, checkpoints) = stream_and_checkpoints(stage);
    Relay::new(
        Arc::new(source),
        Arc::new(checkpoints),
        Arc::new(stage.dynamo_store.indexer().clone()),
        Arc::new(NullPublisher),
        config,
    )
}

/// Real commands through the shop: two products, then `orders` checkouts by three customers
/// (each with a payment intent), the first `paid` of which succeed at the (simulated) provider.
pub async fn run_workload(shop: &Shop, tag: &str, orders: usize, paid: usize) -> Workload {
    run_workload_of(shop, tag, orders, paid, 3).await
}

/// [`run_workload`] with the orders spread over `customers` customers.
pub async fn run_workload_of(
    shop: &Shop,
    tag: &str,
    orders: usize,
    paid: usize,
    customers: usize,
) -> Workload {
    let c = ctx(tag);
    let mut w = Workload::default();
    for (suffix, price) in [("a", "12.50"), ("b", "3.20")] {
        let id = format!("prd_{tag}_{suffix}");
        shop.create_product(
            &c,
            NewProduct {
                product_id: ProductId::parse(&id).expect("product id"),
                name: format!("Product {suffix} of {tag}"),
                category: format!("cat-{tag}"),
                price: Money::parse(price, "EUR").expect("price"),
                initial_stock: 10_000,
            },
        )
        .await
        .expect("create product");
        w.products.push(id);
    }
    for i in 0..orders {
        let customer =
            CustomerId::parse(&format!("cus_{tag}_{}", i % customers)).expect("customer id");
        if !w.customers.contains(&customer.to_string()) {
            w.customers.push(customer.to_string());
        }
        let caller = Caller::Customer(customer.clone());
        let cart = shop.open_cart(&c, &customer).await.expect("open cart");
        let cart_id = cart.value.cart_id.clone();
        shop.add_item(
            &c,
            &caller,
            &cart_id,
            &w.products[0],
            Quantity::parse(1 + (i % 3) as u32).expect("quantity"),
        )
        .await
        .expect("add item");
        shop.add_item(
            &c,
            &caller,
            &cart_id,
            &w.products[1],
            Quantity::parse(1).expect("quantity"),
        )
        .await
        .expect("add item");
        let (receipt, intent) = shop
            .checkout_and_pay(
                &c,
                &caller,
                &cart_id,
                checkout_input(&format!("{customer}@example.com")),
            )
            .await
            .expect("checkout");
        let order_id = receipt.value.order_id.clone();
        if i < paid {
            let intent = intent.expect("the simulated provider creates intents");
            let amount = receipt.value.total.clone();
            let at = chrono::Utc::now();
            shop.payment_fact(&c, &receipt.value.payment_id, |_| {
                PaymentCommand::RecordSucceeded {
                    intent_id: intent.intent_id.clone(),
                    charge_id: Some(infrastructure::simulated::charge_of(&intent.intent_id)),
                    amount: amount.clone(),
                    at,
                }
            })
            .await
            .expect("payment succeeded");
            w.paid.push(order_id.clone());
        }
        w.orders.push(order_id);
    }
    w
}

/// The event ids in the events table (a scan), for completeness checks.
pub async fn table_event_ids(stage: &AwsStage) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut start = None;
    loop {
        let page = stage
            .dynamodb
            .scan()
            .table_name(&stage.names.events_table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan events");
        for item in page.items() {
            if let Some(aws_sdk_dynamodb::types::AttributeValue::S(id)) = item.get("event_id") {
                ids.insert(id.clone());
            }
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return ids,
        }
    }
}

/// The items of every DynamoDB table of the stage that hold `needle` in any string or binary
/// value (at any depth), as `table: item`, and how many items were scanned.
pub async fn items_containing(stage: &AwsStage, needle: &str) -> (Vec<String>, usize) {
    use aws_sdk_dynamodb::types::AttributeValue;
    fn holds(value: &AttributeValue, needle: &str) -> bool {
        let bytes = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle.as_bytes());
        match value {
            AttributeValue::S(s) | AttributeValue::N(s) => s.contains(needle),
            AttributeValue::B(b) => bytes(b.as_ref()),
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().any(|s| s.contains(needle)),
            AttributeValue::Bs(v) => v.iter().any(|b| bytes(b.as_ref())),
            AttributeValue::L(v) => v.iter().any(|v| holds(v, needle)),
            AttributeValue::M(m) => m.values().any(|v| holds(v, needle)),
            _ => false,
        }
    }
    let (mut found, mut scanned) = (Vec::new(), 0);
    for table in stage.names.tables() {
        let mut start = None;
        loop {
            let page = stage
                .dynamodb
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .unwrap_or_else(|e| panic!("scan {table}: {e:?}"));
            for item in page.items() {
                scanned += 1;
                if item.values().any(|v| holds(v, needle)) {
                    found.push(format!("{table}: {item:?}"));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
    }
    (found, scanned)
}

/// The queue URL of a group (or of its DLQ).
pub async fn queue_url(stage: &AwsStage, group: ConsumerGroup, dlq: bool) -> String {
    let names = stage.names.group(group).expect("group names");
    let name = if dlq { &names.dlq } else { &names.queue };
    stage
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .expect("get queue url")
        .queue_url()
        .expect("queue url")
        .to_owned()
}

/// Sends raw bodies to a queue (SendMessageBatch, 10 at a time).
pub async fn send_bodies(stage: &AwsStage, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = stage
            .sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send message batch");
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
}

/// Sends events to a queue as EventBridge would deliver them.
pub async fn send_events(stage: &AwsStage, url: &str, events: &[EventEnvelope]) {
    let bodies: Vec<String> = events
        .iter()
        .map(|e| bus_message(e).expect("bus message"))
        .collect();
    send_bodies(stage, url, &bodies).await;
}

/// Receives and deletes everything a queue holds (until a receive comes back empty).
pub async fn drain_queue(stage: &AwsStage, url: &str) -> Vec<QueuedEvent> {
    let queue =
        infrastructure::aws::SqsEventQueue::new(stage.sqs.clone(), url, test_options().retry);
    use commands::EventQueue;
    let mut out = Vec::new();
    loop {
        let batch = queue
            .receive(commands::Receive {
                max: 10,
                wait: Duration::from_secs(1),
                visibility: Some(Duration::from_secs(30)),
            })
            .await
            .expect("receive");
        if batch.is_empty() {
            return out;
        }
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
        queue.delete(&receipts).await.expect("delete");
        out.extend(batch);
    }
}

/// The queue's approximate counts: (visible, in flight).
pub async fn queue_depth(stage: &AwsStage, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = stage
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let get = |name: A| {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Runs `consumer` steps until its queue is empty and nothing is in flight.
pub async fn run_consumer_until_empty(
    stage: &AwsStage,
    group: ConsumerGroup,
    consumer: &workers::QueueConsumer,
    timeout: Duration,
) {
    let url = queue_url(stage, group, false).await;
    let cancel = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let step = consumer.step_detailed(&cancel).await;
        if let Ok(s) = &step {
            if s.received == 0 && queue_depth(stage, &url).await == (0, 0) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group} queue not drained in {timeout:?} (last step {step:?})"
        );
    }
}

/// The documents of `projection`'s collections in a dump.
pub fn only(dump: Dump, projection: &dyn Projection) -> Dump {
    let collections = projection.collections();
    dump.into_iter()
        .filter(|((collection, _), _)| collections.contains(&collection.as_str()))
        .collect()
}

/// The document `key` of `collection` in the stage's read-model tables: `None` while it is not
/// there, and on an error too (callers poll).
pub async fn read_model_doc(
    stage: &AwsStage,
    collection: &str,
    key: &str,
) -> Option<serde_json::Value> {
    stage.models.get(collection, key).await.ok().flatten()
}

/// The read models `events` give when applied in feed order, in memory: what in-order delivery
/// produces.
pub async fn in_order_reference(
    stage: &AwsStage,
    projection: Arc<dyn Projection>,
    events: &[EventEnvelope],
) -> Dump {
    let models = Arc::new(projections::MemoryReadModelStore::new());
    let dyn_models: Arc<dyn ReadModelStore> = models.clone();
    let runner =
        projections::ProjectionRunner::new(stage.store.clone(), dyn_models, projection, 500);
    for chunk in events.chunks(200) {
        runner
            .apply_with_gap_fill(chunk.to_vec())
            .await
            .expect("in-order apply");
    }
    models.dump().expect("memory dump")
}
