//! Throughput and latency checks of the SQLite event store against its targets, under
//! `synchronous=FULL`. Ignored by default (they want a release build and a quiet machine):
//!
//! ```text
//! cargo test --release -p infrastructure --test sqlite_perf -- --ignored --nocapture --test-threads=1
//! ```

use commands::{
    Actor, Commit, EventStore, Metadata, NewEvent, Snapshot, StreamAppend, StreamRef,
};
use domain::StreamType;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn open(dir: &tempfile::TempDir) -> Arc<SqliteEventStore> {
    Arc::new(
        SqliteEventStore::open(dir.path().join("events.db"), SqliteOptions::default())
            .expect("open"),
    )
}

/// A payload and metadata shaped like the domain's (an order line with decimal strings).
fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "OrderPlaced".into(),
        event_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: json!({
            "order_id": format!("ord-{n}"),
            "customer_id": "cus-7f3a",
            "lines": [{ "product_id": "prod-42", "quantity": 2, "unit_price": "19.99", "line_total": "39.98" }],
            "total": { "amount": "39.98", "currency": "EUR" },
        }),
        metadata: Metadata {
            correlation_id: "0190f1c2-7e4b-7c1a-9d3e-5b6a7c8d9e0f".into(),
            causation_id: Some("0190f1c2-7e4b-7c1a-9d3e-5b6a7c8d9e10".into()),
            actor: Actor {
                subject: "alice".into(),
                role: "customer".into(),
            },
            request_id: Some("req-123".into()),
            command_id: Some(format!("http:alice:{n}")),
        },
    }
}

fn one(stream: &StreamRef, expected_version: u64, events: Vec<NewEvent>) -> Commit {
    Commit {
        streams: vec![StreamAppend {
            stream: stream.clone(),
            expected_version,
            events,
            snapshot: None,
        }],
        idempotency: None,
    }
}

async fn writers(store: Arc<SqliteEventStore>, writers: usize, per_writer: usize) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let s = StreamRef::new(StreamType::Order, format!("w-{w}"));
            for v in 0..per_writer {
                store
                    .append(one(&s, v as u64, vec![event(v)]))
                    .await
                    .expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("writer");
    }
    (writers * per_writer) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn one_writer_commits_at_least_4000_single_event_commits_per_second() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rate = writers(open(&dir), 1, 4_000).await;
    eprintln!("1 writer: {rate:.0} commits/s");
    assert!(rate >= 4_000.0, "1 writer: {rate:.0} commits/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn sixteen_writers_commit_at_least_20000_single_event_commits_per_second() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rate = writers(open(&dir), 16, 2_500).await;
    eprintln!("16 writers: {rate:.0} commits/s");
    assert!(rate >= 20_000.0, "16 writers: {rate:.0} commits/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn feed_scan_decodes_at_least_a_million_events_per_second() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir);
    const TOTAL: usize = 300_000;
    // Single-event streams' worth of variety: 100 events per commit over 3,000 streams.
    for c in 0..TOTAL / 100 {
        let s = StreamRef::new(StreamType::Order, format!("o-{c}"));
        store
            .append(one(&s, 0, (0..100).map(|i| event(c * 100 + i)).collect()))
            .await
            .expect("append");
    }
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let (mut after, mut seen) = (0, 0usize);
        loop {
            let page = store.feed(after, 1_000).await.expect("feed");
            let Some(last) = page.last() else { break };
            after = last.global_position.expect("position");
            seen += page.len();
        }
        assert_eq!(seen, TOTAL);
        best = best.max(seen as f64 / start.elapsed().as_secs_f64());
    }
    eprintln!("feed scan: {best:.0} events/s");
    assert!(best >= 1_000_000.0, "feed scan: {best:.0} events/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn loading_a_10000_event_stream_with_a_snapshot_takes_under_a_millisecond() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir);
    let s = StreamRef::new(StreamType::Product, "hot");
    for c in 0..100u64 {
        let mut commit = one(&s, c * 100, (0..100).map(|i| event(i as usize)).collect());
        if c == 99 {
            // The snapshot sits a few events behind the head, as it usually does.
            commit.streams[0].events.truncate(95);
            commit.streams[0].snapshot = Some(Snapshot {
                version: 9_995,
                schema_version: 1,
                state: json!({ "on_hand": 120, "reserved": 7, "price": "19.99", "name": "Mug" }),
            });
        }
        store.append(commit).await.expect("append");
    }
    store
        .append(one(&s, 9_995, (0..5).map(event).collect()))
        .await
        .expect("append");
    let mut samples = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let loaded = store.load(&s).await.expect("load");
        samples.push(start.elapsed());
        assert_eq!(loaded.version, 10_000);
        assert_eq!(loaded.events.len(), 5);
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    eprintln!("load with snapshot: p50 {p50:?}, p99 {p99:?}");
    assert!(p50 < Duration::from_millis(1), "load p50 {p50:?}");
}
