//! The analysts' export gives the same history on both backends: one workload of real commands
//! on the embedded store and on an AWS stage (DynamoDB, its stream relayed into the durable feed
//! on moto), exported as NDJSON through the same code, holds the same event sequences. A time
//! range (read through the feed's time index on AWS, by filtering the feed embedded) gives, byte
//! for byte, the feed's events within the range.

use api::export::{self, ExportFilter};
use backbone_tests::aws::{drain_relay, fresh_stage, run_workload, test_workers};
use backbone_tests::{eventually, spawn_app_configured, whole_feed};
use commands::conformance::drain_process_managers;
use commands::FeedCursor;
use commands::{EventEnvelope, EventStore};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The NDJSON export of `filter`, in pages of 7.
async fn ndjson(store: Arc<dyn EventStore>, filter: ExportFilter) -> String {
    let mut lines = Vec::new();
    let mut chunks = std::pin::pin!(export::ndjson(store, filter, 7, None));
    while let Some(chunk) = chunks.next().await {
        lines.extend_from_slice(&chunk.expect("export chunk"));
    }
    String::from_utf8(lines).expect("utf-8")
}

/// Every exported envelope, in export order.
async fn exported(store: Arc<dyn EventStore>) -> Vec<EventEnvelope> {
    ndjson(store, ExportFilter::default())
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("an envelope per line"))
        .collect()
}

/// A time range cut out of the middle of the history exports exactly the feed's events within
/// it; `order` events of it too. Returns how many lines it had.
async fn a_time_range_exports_the_feed_within_it(store: Arc<dyn EventStore>) -> usize {
    let feed = whole_feed(store.as_ref()).await;
    let mut times: Vec<_> = feed.iter().map(|e| e.occurred_at).collect();
    times.sort();
    let (from, to) = (times[times.len() / 4], times[times.len() * 3 / 4]);
    for stream in [None, Some("order")] {
        let filter = ExportFilter {
            from: Some(from),
            to: Some(to),
            stream: stream.map(|s| export::StreamFilter::parse(s).unwrap()),
            ..ExportFilter::default()
        };
        // Each partition's matching events, merged by time as a filtered read merges them
        // (on one partition, simply the feed's matching events).
        let mut partitions: BTreeMap<u32, Vec<EventEnvelope>> = BTreeMap::new();
        for e in feed.iter().filter(|e| filter.matches(e)) {
            let (partition, _) = commands::feed::unpack(e.global_position.unwrap());
            partitions.entry(partition).or_default().push(e.clone());
        }
        let expected = commands::feed::merge(partitions.into_values().collect(), usize::MAX);
        assert!(!expected.is_empty());
        let got: Vec<EventEnvelope> = ndjson(store.clone(), filter)
            .await
            .lines()
            .map(|l| serde_json::from_str(l).expect("an envelope per line"))
            .collect();
        assert_eq!(got, expected, "{stream:?}");
    }
    feed.iter()
        .filter(|e| e.occurred_at >= from && e.occurred_at <= to)
        .count()
}

/// The history's shape, independent of generated ids and clocks: per stream type, each stream's
/// event types (with the payloads, but for generated order ids, on products), sorted.
fn shape(events: &[EventEnvelope]) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut streams: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    backbone_tests::assert_partitions_gapless(events);
    for e in events {
        let what = if e.stream_type.to_string() == "product" {
            let mut payload = e.payload.to_value();
            // The order ids are generated: everything else in a product event is the workload's.
            if let Some(fields) = payload.as_object_mut() {
                fields.remove("order_id");
            }
            format!("{} {payload}", e.event_type)
        } else {
            e.event_type.clone()
        };
        streams
            .entry((e.stream_type.to_string(), e.stream_id.clone()))
            .or_default()
            .push(what);
    }
    let mut by_type: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for ((stream_type, _), types) in streams {
        by_type.entry(stream_type).or_default().push(types);
    }
    for sequences in by_type.values_mut() {
        sequences.sort();
    }
    by_type
}

#[tokio::test(flavor = "multi_thread")]
async fn one_workload_exports_the_same_event_sequences_on_both_backends() {
    // AWS: the workload, then the relay and the process managers until nothing new happens.
    let stage = fresh_stage().await;
    let aws_workload = run_workload(&stage.shop, "exp", 6, 3).await;
    let relay = stage.relay(test_workers().relay);
    let mut handled = FeedCursor::start();
    loop {
        drain_relay(&relay).await;
        let before = handled.clone();
        drain_process_managers(&*stage.store, &stage.managers, &mut handled).await;
        if handled == before {
            break;
        }
    }
    let aws = shape(&exported(stage.store.clone()).await);
    let counts = stage.dynamo_store.indexer().counts();
    assert!(a_time_range_exports_the_feed_within_it(stage.store.clone()).await > 10);
    let index_reads = stage.dynamo_store.indexer().counts() - counts;
    assert!(
        index_reads.query > 0,
        "the range was read through the time index: {index_reads:?}"
    );

    // Embedded: the same workload; its in-process process managers follow on their own.
    let app =
        spawn_app_configured(tempfile::tempdir().unwrap(), |c| c.api.demo_catalog = false).await;
    let w = run_workload(&app.state.shop, "exp", 6, 3).await;
    assert_eq!(w.products, aws_workload.products);
    assert!(!aws.is_empty());
    let same = eventually(Duration::from_secs(30), || async {
        let embedded = shape(&exported(app.state.store.clone()).await);
        (embedded == aws).then_some(())
    })
    .await;
    if same.is_none() {
        let embedded = shape(&exported(app.state.store.clone()).await);
        assert_eq!(embedded, aws, "the same event sequences on both backends");
    }
    assert!(a_time_range_exports_the_feed_within_it(app.state.store.clone()).await > 10);
    app.shutdown().await;
}
