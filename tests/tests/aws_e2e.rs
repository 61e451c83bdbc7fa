//! The AWS backbone over HTTP on moto, end to end: `serve --backend aws --with-workers` on a
//! fresh stage deployed from the template, running the shop scenario the embedded suite runs
//! too ([`backbone_tests::scenario`]), plus what only this backend has. Every read model change
//! travels DynamoDB Stream → relay → EventBridge → SQS → queue consumers; the API never applies
//! an event itself.

use api::auth::Role;
use backbone_tests::aws::{items_containing, spawn_aws_app, table_event_ids};
use backbone_tests::scenario::customer_buys_and_pays;
use backbone_tests::{eventually, whole_feed};
use commands::FeedCursor;
use reqwest::{Method, StatusCode};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_buys_and_pays_and_every_view_follows_through_the_aws_fan_out() {
    // spawn_aws_app waited for the demo catalog to come through the fan-out.
    let (app, stage) = spawn_aws_app(true).await;
    let run = customer_buys_and_pays(&app).await;

    // Every event in the table is in the feed exactly once.
    let feed_ids: Vec<String> = run.feed.iter().map(|e| e.event_id.to_string()).collect();
    let unique: BTreeSet<String> = feed_ids.iter().cloned().collect();
    assert_eq!(unique.len(), feed_ids.len(), "no event indexed twice");
    let table = eventually(app.wait, || async {
        let table = table_event_ids(&stage).await;
        let feed: BTreeSet<String> = whole_feed(stage.store.as_ref())
            .await
            .iter()
            .map(|e| e.event_id.to_string())
            .collect();
        (table == feed).then_some(table)
    })
    .await
    .expect("the feed holds every event of the table");
    assert!(table.len() >= feed_ids.len());

    // No table (events, snapshots, idempotency records, the feed, read models, checkpoints)
    // holds the client secret checkout answered.
    let (found, scanned) = items_containing(&stage, &run.client_secret).await;
    assert!(scanned > table.len(), "only {scanned} items scanned");
    assert!(found.is_empty(), "the client secret is stored: {found:?}");
    // The same search does find what is stored, such as the order id.
    assert!(!items_containing(&stage, &run.order_id).await.0.is_empty());

    // Readiness: the relay and the five consumers are registered and healthy.
    let ready = app.send(Method::GET, "/readyz", None, None, &[]).await;
    let workers = ready.body["workers"].as_object().expect("workers").clone();
    for name in [
        "relay",
        "queue:catalog",
        "queue:order-history",
        "queue:notifications",
        "queue:support",
        "queue:process-managers",
    ] {
        assert!(
            workers.contains_key(name),
            "{name} missing from {workers:?}"
        );
        assert_eq!(
            workers[name]["consecutive_failures"], 0,
            "{name} is failing: {workers:?}"
        );
    }

    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_workers_the_api_commits_but_no_read_model_moves() {
    // `serve --backend aws` alone: commands reach DynamoDB, read models wait for the fan-out
    // (there is no shortcut from the API to the projections).
    let (app, stage) = spawn_aws_app(false).await;
    let admin = app.token("ada", Role::Admin);
    app.create_product(&admin, "prd_lonely", "1.00", 1).await;
    let loaded = stage
        .store
        .load(&commands::StreamRef::new(
            domain::StreamType::Product,
            "prd_lonely",
        ))
        .await
        .unwrap();
    assert_eq!(loaded.version, 1, "the command committed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = app.get("/v1/catalog/products/prd_lonely", &admin).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text);
    assert_eq!(
        stage.store.head().await.unwrap(),
        FeedCursor::start(),
        "nothing indexed without a relay"
    );
    app.shutdown().await;
}
