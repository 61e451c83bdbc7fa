//! Blue/green rebuilds on AWS (moto), against the real binaries: `serve` replays the durable
//! feed into a new generation of the catalog while a separate `worker catalog` process keeps the
//! live one current; queries during the rebuild always see the whole catalog; the promotion is
//! the stage's pointer item, which the worker follows, so what it applies afterwards is in the
//! new generation; and a serve that finds an older projection version stored rebuilds it at
//! start.

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;
#[path = "support/process.rs"]
mod process;

use aws_sdk_dynamodb::types::AttributeValue;
use process::{
    admin_token, aws_serve_args, backbone, catalog_size, projections, rebuild_of, table_items,
    until_ok, Process,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "aws-rebuild-secret";

fn serve(stage: &str) -> (Process, String) {
    let server = Process::spawn(&aws_serve_args(stage, JWT_SECRET));
    let api = server.address("serving the HTTP API");
    (server, api)
}

fn admin() -> String {
    admin_token(JWT_SECRET)
}

async fn until_catalog_lists(api: &str, products: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while catalog_size(api).await != products {
        assert!(
            Instant::now() < deadline,
            "the catalog never listed {products} products"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The catalog's rebuild status on `api`.
async fn rebuild_state(api: &str) -> serde_json::Value {
    rebuild_of(&projections(api, &admin()).await, "catalog")
}

/// Waits for the catalog's rebuild to finish, checking the catalog is whole all along.
async fn whole_until_rebuilt(api: &str, products: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert_eq!(
            catalog_size(api).await,
            products,
            "a query saw a partial catalog"
        );
        let status = rebuild_state(api).await;
        assert_ne!(status["state"], "failed", "{status}");
        if status["state"] == "done" {
            return status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pointer(client: &aws_sdk_dynamodb::Client, table: &str) -> (String, String) {
    let item = client
        .get_item()
        .table_name(table)
        .key("id", AttributeValue::S("generation#catalog".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get pointer");
    let item: HashMap<String, AttributeValue> = item.item().cloned().unwrap_or_default();
    let n = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .cloned()
            .unwrap_or_default()
    };
    (n("generation"), n("version"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_aws_builds_a_new_generation_that_the_workers_follow() {
    let names = moto::fresh_names();
    let stage = names.stage.as_str();
    backbone(&["provision", "--stage", stage]);
    backbone(&[
        "seed",
        "--orders",
        "4",
        "--products",
        "12",
        "--backend",
        "aws",
        "--stage",
        stage,
    ]);
    let (server, api) = serve(stage);
    let relay = Process::spawn(&["relay", "--stage", stage]);
    let worker = Process::spawn(&["worker", "catalog", "--stage", stage, "--wait-secs", "1"]);
    until_ok(&format!("{api}/readyz")).await;
    until_catalog_lists(&api, 12).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    let before = table_events(&dynamodb, &names.events_table).await;

    let answer = reqwest::Client::new()
        .post(format!("{api}/v1/admin/projections/catalog/rebuild"))
        .bearer_auth(admin())
        .send()
        .await
        .expect("rebuild");
    assert_eq!(answer.status(), 202);
    let done = whole_until_rebuilt(&api, 12).await;
    assert!(
        done["per_second"].as_f64().is_some_and(|p| p > 0.0),
        "{done}"
    );
    assert_eq!(
        table_events(&dynamodb, &names.events_table).await,
        before,
        "a replay issues no command"
    );
    assert_eq!(
        pointer(&dynamodb, &names.readmodel_state_table).await,
        ("1".to_owned(), "1".to_owned())
    );

    // The worker process follows the promotion: a new product lands in generation 1, which is
    // what serve reads now.
    let created = reqwest::Client::new()
        .post(format!("{api}/v1/admin/products"))
        .bearer_auth(admin())
        .json(&serde_json::json!({
            "product_id": "prd_after_rebuild", "name": "After", "category": "misc",
            "price": { "amount": "5.00", "currency": "EUR" }, "initial_stock": 3
        }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    until_catalog_lists(&api, 13).await;
    assert!(worker
        .logs()
        .contains("following a promoted read model generation"));
    assert!(server.stop().success());

    // A serve that finds the catalog built by an older version rebuilds it at start.
    dynamodb
        .update_item()
        .table_name(&names.readmodel_state_table)
        .key("id", AttributeValue::S("generation#catalog".into()))
        .update_expression("SET version = :old")
        .expression_attribute_values(":old", AttributeValue::N("0".into()))
        .send()
        .await
        .expect("age the pointer");
    let (server, api) = serve(stage);
    until_ok(&format!("{api}/readyz")).await;
    whole_until_rebuilt(&api, 13).await;
    assert_eq!(
        pointer(&dynamodb, &names.readmodel_state_table).await,
        ("2".to_owned(), "1".to_owned())
    );
    assert!(server
        .logs()
        .contains("projection version changed, rebuilding"));
    for process in [server, worker, relay] {
        assert!(process.stop().success());
    }
}

/// Events in the stage's events table (snapshot items carry no event type).
async fn table_events(client: &aws_sdk_dynamodb::Client, table: &str) -> usize {
    table_items(client, table)
        .await
        .iter()
        .filter(|i| i.contains_key("event_type"))
        .count()
}

/// Events in the stage's durable feed, as the analysts' export reads it.
fn feed_events(stage: &str) -> usize {
    let out = backbone(&["events", "export", "--backend", "aws", "--stage", stage]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

async fn until_feed_has_every_event(client: &aws_sdk_dynamodb::Client, stage: &str, table: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (table, feed) = (table_events(client, table).await, feed_events(stage));
        if feed == table && table > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the feed has {feed} of {table} events"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Two more orders on the stage (with the catalog of three products a first seed made).
fn seed_aws(stage: &str) {
    backbone(&[
        "seed",
        "--orders",
        "2",
        "--products",
        "3",
        "--backend",
        "aws",
        "--stage",
        stage,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_share_the_stream_by_lease_and_one_takes_over_when_the_other_is_killed() {
    let names = moto::fresh_names();
    let stage = names.stage.as_str();
    backbone(&["provision", "--stage", stage]);
    let relay = || Process::spawn(&["relay", "--stage", stage, "--lease-ttl", "2s"]);
    let (first, second) = (relay(), relay());
    seed_aws(stage);
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto::sdk_config().await);
    until_feed_has_every_event(&dynamodb, stage, &names.events_table).await;
    // One relay holds each shard; the holder is killed without a chance to give it back.
    let (holder, survivor) = if first.logs().contains("shard lease taken") {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        holder.logs().contains("shard lease taken"),
        "{}",
        holder.logs()
    );
    drop(holder);
    seed_aws(stage);
    // The survivor takes the shard over once the lease expires, from the checkpoint.
    until_feed_has_every_event(&dynamodb, stage, &names.events_table).await;
    assert!(
        survivor.logs().contains("shard lease taken"),
        "{}",
        survivor.logs()
    );
    assert!(survivor.stop().success());
}
