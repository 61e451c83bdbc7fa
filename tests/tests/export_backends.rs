//! The analysts' export gives the same history on both backends: one workload of real commands
//! on the embedded store and on an AWS stage (DynamoDB, its stream relayed into the durable feed
//! on moto), exported as NDJSON through the same code, holds the same event sequences.

use api::export::{self, ExportFilter};
use backbone_tests::aws::{drain_relay, fresh_stage, run_workload, test_workers};
use backbone_tests::{eventually, spawn_app_configured};
use commands::conformance::drain_process_managers;
use commands::{EventEnvelope, EventStore};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Every exported envelope, in export order.
async fn exported(store: Arc<dyn EventStore>) -> Vec<EventEnvelope> {
    let mut lines = Vec::new();
    let mut chunks = std::pin::pin!(export::ndjson(store, ExportFilter::default(), 7));
    while let Some(chunk) = chunks.next().await {
        lines.extend_from_slice(&chunk.expect("export chunk"));
    }
    String::from_utf8(lines)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an envelope per line"))
        .collect()
}

/// The history's shape, independent of generated ids and clocks: per stream type, each stream's
/// event types (with the payloads, but for generated order ids, on products), sorted.
fn shape(events: &[EventEnvelope]) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut streams: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut positions = Vec::new();
    for e in events {
        positions.push(e.global_position.expect("exported with its position"));
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
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase"
    );
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
    let mut handled = 0;
    loop {
        drain_relay(&relay).await;
        let before = handled;
        drain_process_managers(&*stage.store, &stage.managers, &mut handled).await;
        if handled == before {
            break;
        }
    }
    let aws = shape(&exported(stage.store.clone()).await);

    // Embedded: the same workload; its in-process process managers follow on their own.
    let app = spawn_app_configured(tempfile::tempdir().unwrap(), |c| c.demo_catalog = false).await;
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
    app.shutdown().await;
}
