//! The AWS pipeline's capacity under DynamoDB's per-partition limits, simulated on moto through
//! [`backbone_tests::throttle`] (moto itself has no limits):
//!
//! 1. feed indexing: events per second that concurrent indexers (one per relay shard) get into
//!    the durable feed;
//! 2. projection apply: events per second that 1 and 4 queue consumers of the support
//!    projection apply from its SQS queue;
//! 3. the DynamoDB request units one order takes, table by table, from the cart to the paid
//!    order's read models (commands, relay, every consumer group), for the cost model.
//!
//! The limits are DynamoDB's divided by `BENCH_SCALE` (default 40), so that moto, a Python
//! server on the same two cores, stays far below its own ceiling and the partitions' limits are
//! what binds; every request also takes `BENCH_LATENCY_MS` (default 10) of simulated service
//! time, as DynamoDB in-region. Multiply an events/s figure by the scale for DynamoDB's.
//!
//! Run: `PATH=$PWD/.venv/bin:$PATH cargo bench -p backbone-tests --bench capacity`
//! (`BENCH_ONLY=index|contention|apply|units` runs one section; `BENCH_SCALE`, `BENCH_LATENCY_MS`,
//! `BENCH_INDEX_EVENTS`, `BENCH_APPLY_ORDERS`, `BENCH_FLOW_ORDERS` tune it). Prints Markdown.

use api::compose_aws::{AwsOptions, AwsStage};
use backbone_tests::aws::{
    fresh_stage_partitioned, fresh_stage_with, moto, run_workload_of, send_events, test_options,
};
use backbone_tests::bench::{env_usize, log_to_stderr_when_asked};
use backbone_tests::throttle::{Limits, Throttle};
use commands::conformance::new_event;
use commands::FeedCursor;
use commands::{Commit, EventEnvelope, EventStore, StreamAppend, StreamRef};
use domain::StreamType;
use infrastructure::aws::{ConsumerGroup, FeedIndexer};
use projections::{Projection, ReadModelStore};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workers::{CancellationToken, QueueConsumerConfig};

/// A throttle over `stage`'s tables, and the stage again with every DynamoDB request through it.
async fn throttled(stage: &AwsStage, limits: Limits) -> (Arc<Throttle>, AwsStage) {
    let throttle = Throttle::new(limits);
    throttle.learn_tables(&stage.dynamodb).await;
    let sdk = throttle.wrap(&moto::sdk_config().await);
    let again = AwsStage::new(&sdk, &stage.names.stage, stage.options.clone());
    (throttle, again)
}

/// `streams` product streams of `per_stream` events each, appended and read back.
async fn synthetic_events(
    stage: &AwsStage,
    streams: usize,
    per_stream: usize,
) -> Vec<Vec<EventEnvelope>> {
    let mut out = Vec::new();
    for s in 0..streams {
        let stream = StreamRef::new(StreamType::Product, format!("prd_cap_{s}"));
        let events = (0..per_stream)
            .map(|i| new_event("ThingCounted", json!({ "n": i, "pad": "x".repeat(300) })))
            .collect();
        stage
            .store
            .append(Commit {
                streams: vec![StreamAppend {
                    stream: stream.clone(),
                    expected_version: 0,
                    events,
                    snapshot: None,
                }],
                idempotency: None,
            })
            .await
            .expect("append");
        out.push(
            stage
                .store
                .read(&stream, 1..=u64::MAX)
                .await
                .expect("read back"),
        );
    }
    out
}

/// Indexes `streams` with one concurrent indexer per group of streams (as relays index their
/// shards), each in pages of `page` stream records; returns events/s.
async fn index_rate(
    indexer: &FeedIndexer,
    streams: &[Vec<EventEnvelope>],
    indexers: usize,
    page: usize,
) -> (f64, usize) {
    let total: usize = streams.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..indexers {
        // A shard's records: its streams interleaved, each in sequence order.
        let own: Vec<&Vec<EventEnvelope>> = streams.iter().skip(i).step_by(indexers).collect();
        let longest = own.iter().map(|s| s.len()).max().unwrap_or(0);
        let mine: Vec<EventEnvelope> = (0..longest)
            .flat_map(|k| own.iter().filter_map(move |s| s.get(k).cloned()))
            .collect();
        let indexer = indexer.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in mine.chunks(page) {
                indexer.index(chunk.to_vec()).await.expect("index");
            }
        }));
    }
    for t in tasks {
        t.await.expect("indexer task");
    }
    (total as f64 / started.elapsed().as_secs_f64(), total)
}

/// Applies `events` from the support queue with `consumers` concurrent consumers; returns
/// events/s.
async fn apply_rate(
    plain: &AwsStage,
    limits: Limits,
    events: &[EventEnvelope],
    consumers: usize,
) -> (f64, String) {
    let projection = projections::support::SupportProjection;
    plain.models.reset(&projection).await.expect("reset");
    let url = backbone_tests::aws::queue_url(plain, ConsumerGroup::Support, false).await;
    send_events(plain, &url, events).await;
    let (throttle, slow) = throttled(plain, limits).await;
    let config = QueueConsumerConfig {
        max_messages: 10,
        wait: Duration::from_millis(200),
        visibility: Some(Duration::from_secs(30)),
    };
    let deleted = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let stamp = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    // For lining the run up with samples of the emulator's CPU time.
    eprintln!("apply phase: {consumers} consumers from {:.3}", stamp());
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let consumer = slow
            .consumer(ConsumerGroup::Support, config.clone())
            .await
            .expect("consumer");
        let (deleted, cancel, total) = (deleted.clone(), cancel.clone(), events.len());
        tasks.push(tokio::spawn(async move {
            while deleted.load(Ordering::SeqCst) < total {
                let step = consumer
                    .step_detailed(&cancel)
                    .await
                    .expect("consumer step");
                assert_eq!(step.failed, 0, "a batch failed");
                deleted.fetch_add(step.deleted, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer task");
    }
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    eprintln!("apply phase: {consumers} consumers until {:.3}", stamp());
    let names = &plain.names;
    let hottest = [
        &names.docs_table,
        &names.index_table,
        &names.readmodel_state_table,
    ]
    .into_iter()
    .flat_map(|table| throttle.usage(table))
    .max_by(|a, b| a.1.write_units.total_cmp(&b.1.write_units))
    .map(|(pk, u)| {
        format!(
            "`{pk}` ({:.0} units, {} requests)",
            u.write_units, u.requests
        )
    })
    .unwrap_or_default();
    (rate, hottest)
}

#[tokio::main]
async fn main() {
    log_to_stderr_when_asked();
    let scale = env_usize("BENCH_SCALE", 40) as f64;
    let latency = Duration::from_millis(env_usize("BENCH_LATENCY_MS", 10) as u64);
    let index_events = env_usize("BENCH_INDEX_EVENTS", 960);
    let apply_orders = env_usize("BENCH_APPLY_ORDERS", 60);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |section: &str| only.is_empty() || only == section;
    // No burst: a short run measures the sustained rate.
    let limits = Limits {
        burst: Duration::ZERO,
        latency,
        ..Limits::dynamodb().scaled(scale)
    };
    println!(
        "## Capacity under DynamoDB's partition limits (simulated on moto, limits ÷ {scale})\n"
    );
    println!(
        "Per partition key: {} write units/s, {} read units/s, no burst, {} ms per request. Figures are at the scaled limits; × {scale} for DynamoDB.\n",
        limits.write_units,
        limits.read_units,
        latency.as_millis()
    );
    if run("index") {
        indexing(limits, index_events, &[(1, 1), (2, 1), (4, 1), (8, 1)]).await;
    }
    if run("contention") {
        // One partition's counter, fought over by four indexers (relays) at once.
        indexing(limits, index_events / 4, &[(1, 1), (1, 4)]).await;
    }
    if run("apply") {
        applying(limits, apply_orders).await;
    }
    if run("units") {
        units_per_order(env_usize("BENCH_FLOW_ORDERS", 20)).await;
    }
}

/// Section 1: feed indexing with P = 1, 2, 4 and 8 (and P = 1 with four indexers).
async fn indexing(limits: Limits, index_events: usize, rows: &[(u32, usize)]) {
    println!("### Feed indexing ({index_events} events of ~0.6 KB in 64 streams, relayed in pages of 100)\n");
    println!("| feed partitions | concurrent indexers | events/s | × P = 1 | hottest partition key (write units) |\n|---|---|---|---|---|");
    let mut one = None;
    for &(partitions, indexers) in rows {
        let stage = fresh_stage_partitioned(test_options(), Some(partitions)).await;
        // Contended indexers are slow: a quarter of the events is enough to see it.
        let events = if indexers > 1 {
            index_events / 4
        } else {
            index_events
        };
        let streams = synthetic_events(&stage, 64, events.div_ceil(64)).await;
        let (throttle, slow) = throttled(&stage, limits).await;
        let (rate, _) = index_rate(slow.dynamo_store.indexer(), &streams, indexers, 100).await;
        let base = *one.get_or_insert(rate);
        let hottest = throttle
            .usage(&stage.names.feed_table)
            .into_iter()
            .next()
            .map(|(pk, u)| format!("`{pk}` ({:.0})", u.write_units))
            .unwrap_or_default();
        println!(
            "| {partitions} | {indexers} | {rate:.0} | {:.2} | {hottest} |",
            rate / base
        );
    }
}

/// `events` with their streams interleaved round-robin, each stream's events in order.
fn interleaved(events: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
    let mut streams: Vec<std::collections::VecDeque<EventEnvelope>> = Vec::new();
    let mut index: std::collections::HashMap<(StreamType, String), usize> = Default::default();
    for e in events {
        let i = *index
            .entry((e.stream_type, e.stream_id.clone()))
            .or_insert_with(|| {
                streams.push(Default::default());
                streams.len() - 1
            });
        streams[i].push_back(e);
    }
    let mut out = Vec::new();
    while streams.iter().any(|s| !s.is_empty()) {
        out.extend(streams.iter_mut().filter_map(|s| s.pop_front()));
    }
    out
}

/// Section 2: applying the support projection with 1 and 4 queue consumers.
async fn applying(limits: Limits, apply_orders: usize) {
    let stage = fresh_stage_with(test_options()).await;
    let workload = run_workload_of(
        &stage.shop,
        "cap",
        apply_orders,
        apply_orders / 2,
        apply_orders,
    )
    .await;
    let events: Vec<EventEnvelope> = {
        let relay =
            backbone_tests::aws::indexing_relay(&stage, backbone_tests::aws::test_workers().relay);
        backbone_tests::aws::drain_relay(&relay).await;
        stage
            .store
            .feed(&FeedCursor::start(), 100_000)
            .await
            .expect("feed")
    };
    let support = projections::support::SupportProjection;
    let events: Vec<EventEnvelope> = events.into_iter().filter(|e| support.handles(e)).collect();
    // As in a busy shop, where many orders move at once, the queue holds the streams' events
    // interleaved (each stream's in order); back to back, one order's events would mostly
    // wait on each other across consumers instead.
    let events = interleaved(events);
    println!(
        "\n### Projection apply (support; {} events of {} orders)\n",
        events.len(),
        workload.orders.len()
    );
    println!(
        "| consumers | events/s | × one consumer | hottest read-model key |\n|---|---|---|---|"
    );
    let mut one = None;
    for consumers in [1usize, 4] {
        let (rate, hottest) = apply_rate(&stage, limits, &events, consumers).await;
        let base = *one.get_or_insert(rate);
        println!(
            "| {consumers} | {rate:.0} | {:.2} | {hottest} |",
            rate / base
        );
    }
}

/// Runs the relay and every consumer group of `stage` until nothing moves any more.
async fn settle(stage: &AwsStage) {
    let relay = stage.relay(backbone_tests::aws::test_workers().relay);
    let config = QueueConsumerConfig {
        max_messages: 10,
        wait: Duration::from_millis(100),
        visibility: Some(Duration::from_secs(30)),
    };
    let mut consumers = Vec::new();
    for group in ConsumerGroup::ALL {
        consumers.push(
            stage
                .consumer(group, config.clone())
                .await
                .expect("consumer"),
        );
    }
    let cancel = CancellationToken::new();
    loop {
        let mut moved = backbone_tests::aws::drain_relay(&relay).await;
        for consumer in &consumers {
            loop {
                let step = consumer
                    .step_detailed(&cancel)
                    .await
                    .expect("consumer step");
                assert_eq!(step.failed, 0, "a batch failed");
                if step.received == 0 {
                    break;
                }
                moved += step.received;
            }
        }
        if moved == 0 {
            return;
        }
    }
}

/// Request units per order, table by table: `orders` paid orders of distinct customers through
/// the whole pipeline at DynamoDB's real limits (nothing waits; the throttle only counts).
async fn units_per_order(orders: usize) {
    // The production snapshot interval (the tests snapshot every 3 events).
    let stage = fresh_stage_with(AwsOptions {
        service: commands::ServiceConfig::default(),
        ..test_options()
    })
    .await;
    let limits = Limits {
        latency: Duration::ZERO,
        ..Limits::dynamodb()
    };
    let (throttle, counted) = throttled(&stage, limits).await;
    run_workload_of(&counted.shop, "flow", orders, orders, orders).await;
    settle(&counted).await;
    let events = stage.store.head().await.expect("head");
    println!(
        "\n### Request units per order ({orders} paid orders of distinct customers; {:.1} events each)\n",
        events.count() as f64 / orders as f64
    );
    println!("| table | write units / order | read units / order |\n|---|---|---|");
    let names = &stage.names;
    let (mut writes, mut reads) = (0.0, 0.0);
    for (label, table) in [
        ("events", &names.events_table),
        ("idempotency", &names.idempotency_table),
        ("feed", &names.feed_table),
        ("relay", &names.relay_table),
        ("read-model documents", &names.docs_table),
        ("read-model indexes", &names.index_table),
        ("read-model state", &names.readmodel_state_table),
        ("keys", &names.keys_table),
    ] {
        let (w, r) = throttle
            .usage(table)
            .iter()
            .fold((0.0, 0.0), |(w, r), (_, u)| {
                (w + u.write_units, r + u.read_units)
            });
        writes += w;
        reads += r;
        println!(
            "| {label} | {:.1} | {:.1} |",
            w / orders as f64,
            r / orders as f64
        );
    }
    println!(
        "| **all** | **{:.1}** | **{:.1}** |",
        writes / orders as f64,
        reads / orders as f64
    );
}
