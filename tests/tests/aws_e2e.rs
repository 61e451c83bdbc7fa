//! The AWS backbone over HTTP on moto, end to end: `serve --backend aws --with-workers` on a
//! fresh stage, the same flow as the embedded suite (cart → checkout → simulated payment →
//! order history, notifications, support timeline, analyst export). Every read model change
//! travels DynamoDB Stream → relay → EventBridge → SQS → queue consumers; the API never applies
//! an event itself.

use api::auth::Role;
use backbone_tests::aws::{spawn_aws_app, table_event_ids, whole_feed};
use backbone_tests::{checkout_body, eventually, TestApp};
use commands::EventEnvelope;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn order_reaches(app: &TestApp, token: &str, order_id: &str, status: &str) -> Value {
    eventually(WAIT, || async {
        let a = app.get(&format!("/v1/orders/{order_id}"), token).await;
        (a.status == StatusCode::OK && a.body["status"] == status).then_some(a.body)
    })
    .await
    .unwrap_or_else(|| panic!("order {order_id} never became {status}"))
}

async fn notification(app: &TestApp, token: &str, order_id: &str, kind: &str) -> Value {
    eventually(WAIT, || async {
        let a = app.get("/v1/me/notifications", token).await;
        a.body["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["order_id"] == order_id && n["kind"] == kind)
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no {kind} notification for {order_id}"))
}

fn parse_ndjson(text: &str) -> Vec<EventEnvelope> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an envelope per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_buys_and_pays_and_every_view_follows_through_the_aws_fan_out() {
    let (app, stage) = spawn_aws_app(true).await;
    let alice = app.token("alice", Role::Customer);

    // The catalog came through the fan-out (spawn_aws_app waited for it).
    let catalog = app
        .get("/v1/catalog/products?category=coffee", &alice)
        .await;
    assert_eq!(catalog.status, StatusCode::OK, "{}", catalog.text);
    assert_eq!(catalog.body["products"].as_array().unwrap().len(), 3);

    // Cart: open, add two products, change a quantity.
    let cart = app.open_cart(&alice).await;
    let added = app
        .post(
            &format!("/v1/carts/{cart}/items"),
            &alice,
            json!({ "product_id": "prd_espresso", "quantity": 2 }),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    let added = app
        .post(
            &format!("/v1/carts/{cart}/items"),
            &alice,
            json!({ "product_id": "prd_sencha", "quantity": 1 }),
        )
        .await;
    assert_eq!(added.body["lines"].as_array().unwrap().len(), 2);
    let changed = app
        .send(
            Method::PATCH,
            &format!("/v1/carts/{cart}/items/prd_sencha"),
            Some(&alice),
            Some(json!({ "quantity": 3 })),
            &[
                ("x-correlation-id", "corr-aws-1"),
                ("x-request-id", "req-aws-1"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(
        changed.body["total"],
        json!({ "amount": "75.30", "currency": "EUR" })
    );

    // Checkout: one commit across cart, order, products and payment.
    let checkout = app
        .post(
            &format!("/v1/carts/{cart}/checkout"),
            &alice,
            checkout_body("alice@example.com"),
        )
        .await;
    assert_eq!(checkout.status, StatusCode::CREATED, "{}", checkout.text);
    let order_id = checkout.body["order_id"].as_str().unwrap().to_string();
    let payment_id = checkout.body["payment_id"].as_str().unwrap().to_string();
    let intent_id = checkout.body["intent_id"].as_str().unwrap().to_string();
    assert_eq!(checkout.body["status"], "awaiting_payment");
    assert_eq!(checkout.body["total"]["amount"], "75.30");
    let placed = order_reaches(&app, &alice, &order_id, "awaiting_payment").await;
    assert_eq!(placed["lines"].as_array().unwrap().len(), 2);
    // Stock reserved, seen through the catalog read model.
    let espresso = eventually(WAIT, || async {
        let a = app.get("/v1/catalog/products/prd_espresso", &alice).await;
        (a.body["reserved"] == 2).then_some(a.body)
    })
    .await
    .expect("the reservation reaches the catalog");
    assert_eq!(espresso["available"], 98);

    // Pay with the simulated gateway; the process managers (a queue consumer) mark it paid.
    let paid = app
        .post(
            &format!("/v1/payments/{payment_id}/confirm"),
            &alice,
            json!({ "payment_method": "pm_card_visa" }),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    assert_eq!(paid.body["status"], "succeeded");
    let order = order_reaches(&app, &alice, &order_id, "paid").await;
    assert_eq!(order["payment_status"], "succeeded");
    assert_eq!(order["paid"]["amount"], "75.30");

    // Order history and notification.
    let history = app.get("/v1/orders", &alice).await;
    let orders = history.body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], order_id.as_str());
    let confirmed = notification(&app, &alice, &order_id, "order_confirmed").await;
    assert!(confirmed["subject"].as_str().unwrap().contains(&order_id));

    // Support: search by email and intent, and the timeline.
    let support = app.token("sam", Role::Support);
    let found = eventually(WAIT, || async {
        let a = app
            .get(
                "/v1/support/orders?email=ALICE@example.com&status=paid",
                &support,
            )
            .await;
        (a.body["orders"].as_array()?.len() == 1).then_some(a)
    })
    .await
    .expect("support finds the paid order by email");
    assert_eq!(found.body["orders"][0]["order_id"], order_id.as_str());
    let by_intent = app
        .get(
            &format!("/v1/support/orders?intent_id={intent_id}"),
            &support,
        )
        .await;
    assert_eq!(by_intent.body["orders"][0]["order_id"], order_id.as_str());
    let timeline = eventually(WAIT, || async {
        let a = app
            .get(&format!("/v1/support/orders/{order_id}/timeline"), &support)
            .await;
        let entries = a.body["entries"].as_array()?.clone();
        entries
            .iter()
            .any(|e| e["source"] == "notification")
            .then_some(entries)
    })
    .await
    .expect("the timeline joins order, payment and notification entries");
    for source in ["order", "payment", "notification"] {
        assert!(
            timeline.iter().any(|e| e["source"] == source),
            "no {source} entry in {timeline:?}"
        );
    }

    // Analyst: the NDJSON export is the durable feed the relay indexed from the stream.
    let analyst = app.token("ana", Role::Analyst);
    let exported = eventually(WAIT, || async {
        let export = app.get("/v1/events", &analyst).await;
        let events = parse_ndjson(&export.text);
        events
            .iter()
            .any(|e| e.event_type == "OrderPaid" && e.stream_id == order_id)
            .then_some(events)
    })
    .await
    .expect("OrderPaid reaches the feed");
    let feed = whole_feed(&stage).await;
    assert!(exported.len() > 10, "{} events", exported.len());
    assert_eq!(
        exported[..],
        feed[..exported.len()],
        "the export is the feed"
    );
    let positions: Vec<u64> = feed.iter().map(|e| e.global_position.unwrap()).collect();
    assert_eq!(
        positions,
        (1..=feed.len() as u64).collect::<Vec<_>>(),
        "gapless positions"
    );
    let placed_only = parse_ndjson(&app.get("/v1/events?type=OrderPlaced", &analyst).await.text);
    assert_eq!(placed_only.len(), 1);
    // The process managers carry the correlation id on: OrderPaid shares the confirm's.
    let succeeded = feed
        .iter()
        .find(|e| e.event_type == "PaymentSucceeded")
        .unwrap();
    let order_paid = feed.iter().find(|e| e.event_type == "OrderPaid").unwrap();
    assert_eq!(
        order_paid.metadata.correlation_id,
        succeeded.metadata.correlation_id
    );
    assert_eq!(
        order_paid.metadata.causation_id,
        Some(succeeded.event_id.to_string())
    );
    let patched = feed
        .iter()
        .find(|e| e.stream_id == cart && e.metadata.correlation_id == "corr-aws-1")
        .expect("an event of the PATCH request");
    assert_eq!(patched.metadata.request_id.as_deref(), Some("req-aws-1"));

    // Every event in the table is in the feed exactly once.
    let feed_ids: Vec<String> = feed.iter().map(|e| e.event_id.to_string()).collect();
    let unique: BTreeSet<String> = feed_ids.iter().cloned().collect();
    assert_eq!(unique.len(), feed_ids.len(), "no event indexed twice");
    let table = eventually(WAIT, || async {
        let table = table_event_ids(&stage).await;
        let feed: BTreeSet<String> = whole_feed(&stage)
            .await
            .iter()
            .map(|e| e.event_id.to_string())
            .collect();
        (table == feed).then_some(table)
    })
    .await
    .expect("the feed holds every event of the table");
    assert!(table.len() >= feed_ids.len());

    // Time travel reads the event store.
    let at_one = app
        .get(&format!("/v1/streams/cart/{cart}?at=1"), &analyst)
        .await;
    assert_eq!(at_one.status, StatusCode::OK, "{}", at_one.text);
    assert_eq!(at_one.body["state"]["status"], "open");
    let latest = app.get(&format!("/v1/streams/cart/{cart}"), &analyst).await;
    assert_eq!(latest.body["state"]["status"], "checked_out");

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
    let created = app
        .post(
            "/v1/admin/products",
            &admin,
            json!({ "product_id": "prd_lonely", "name": "Lonely", "category": "misc",
                    "price": { "amount": "1.00", "currency": "EUR" }, "initial_stock": 1 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
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
        0,
        "nothing indexed without a relay"
    );
    app.shutdown().await;
}
