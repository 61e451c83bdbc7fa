//! Read-your-writes on both backends. A command answers a `consistency` token. A read-model
//! query that passes the token answers with the write reflected: it waits, bounded, until every
//! stream of the token that the read model consumes has been applied up to the token's
//! version. The parameter and its meaning are the same embedded and on AWS, where a commit has
//! no feed position.

use api::auth::Role;
use backbone_tests::aws::{drain_relay, run_consumer_until_empty, spawn_aws_app, test_workers};
use backbone_tests::{dynamodb_test, spawn_app, TestApp};
use commands::Consistency;
use infrastructure::aws::ConsumerGroup;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// Each read below is one request: no polling. The token makes the query wait for its write.
async fn every_view_reflects_the_write_behind_the_token(app: &TestApp) {
    let alice = app.token("alice", Role::Customer);
    let support = app.token("sam", Role::Support);
    let admin = app.token("ada", Role::Admin);

    let created = app.create_product(&admin, "prd_ryw", "4.00", 5).await;
    let token: Consistency = created.consistency().parse().expect("a token");
    assert_eq!(token.streams().len(), 1, "{token}");
    let product = app
        .get_consistent("/v1/catalog/products/prd_ryw", &alice, &token.to_string())
        .await;
    assert_eq!(product.status, StatusCode::OK, "{}", product.text);
    assert_eq!(product.body["available"], 5);

    let placed = app.place_order(&alice, &[("prd_ryw", 2)]).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let order_id = placed.body["order_id"].as_str().unwrap();
    let token = placed.consistency();
    assert!(
        token.contains(&format!("order.{order_id}.")) && token.contains("product.prd_ryw."),
        "the checkout's token names the order and the product it reserved: {token}"
    );

    let order = app
        .get_consistent(&format!("/v1/orders/{order_id}"), &alice, token)
        .await;
    assert_eq!(order.status, StatusCode::OK, "{}", order.text);
    assert_eq!(order.body["status"], "awaiting_payment");
    let orders = app.get_consistent("/v1/orders", &alice, token).await;
    assert_eq!(
        orders.body["orders"][0]["order_id"], order_id,
        "{}",
        orders.text
    );
    let product = app
        .get_consistent("/v1/catalog/products/prd_ryw", &alice, token)
        .await;
    assert_eq!(product.body["reserved"], 2, "{}", product.text);
    assert_eq!(product.body["available"], 3);
    let found = app
        .get_consistent(
            &format!("/v1/support/orders?order_id={order_id}"),
            &support,
            token,
        )
        .await;
    assert_eq!(
        found.body["orders"].as_array().map(Vec::len),
        Some(1),
        "{}",
        found.text
    );
    let timeline = app
        .get_consistent(
            &format!("/v1/support/orders/{order_id}/timeline"),
            &support,
            token,
        )
        .await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.text);

    // A malformed token is refused, naming the parameter.
    for bad in ["order.x", "invoice.i.1", "order.o.0", "order.o%20p.1"] {
        let a = app
            .get_consistent(&format!("/v1/orders/{order_id}"), &alice, bad)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
        assert_eq!(a.code(), "validation_failed");
        assert_eq!(a.field(), "consistency");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_view_reflects_the_write_behind_the_token_embedded() {
    let app = spawn_app().await;
    every_view_reflects_the_write_behind_the_token(&app).await;
    // Embedded commits also know their feed position.
    let admin = app.token("ada", Role::Admin);
    let restocked = app
        .post(
            "/v1/admin/products/prd_ryw/restock",
            &admin,
            serde_json::json!({ "quantity": 1 }),
        )
        .await;
    assert_eq!(restocked.status, StatusCode::OK, "{}", restocked.text);
    assert!(restocked.position() > 0, "{}", restocked.text);
    app.shutdown().await;
}

dynamodb_test!(
    every_view_reflects_the_write_behind_the_token_on_dynamodb,
    every_view_reflects_the_write_behind_the_token,
    workers: true
);

/// On AWS with no workers running, the query with a token waits while the write travels the
/// fan-out, and answers as soon as the consumer applied it; with nothing applying it, it gives
/// up after its bound and answers the read model as it is.
#[tokio::test(flavor = "multi_thread")]
async fn on_dynamodb_the_query_waits_for_the_fan_out_and_its_wait_is_bounded() {
    let (app, stage) = spawn_aws_app(false).await;
    let alice = app.token("alice", Role::Customer);
    let placed = app.place_order(&alice, &[("prd_espresso", 1)]).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    assert!(
        placed.body["position"].is_null(),
        "no feed position on DynamoDB"
    );
    let order_id = placed.body["order_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/orders/{order_id}?consistency={}", placed.consistency());

    // Nothing moves the write to the read model: the query gives up after its bound.
    let started = Instant::now();
    let missing = app.get(&path, &alice).await;
    let waited = started.elapsed();
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    assert!(
        waited >= app.state.consistency_wait
            && waited < app.state.consistency_wait + Duration::from_secs(3),
        "waited {waited:?}"
    );

    // The relay publishes the write; a query then waits until the order-history consumer
    // applied it, and answers at once after that.
    drain_relay(&stage.relay(test_workers().relay)).await;
    let waiting = tokio::spawn({
        let request = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(&alice);
        async move {
            let response = request.send().await.expect("the query");
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("a JSON answer");
            (status, body)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the query waits for its write");
    let group = ConsumerGroup::OrderHistory;
    let consumer = stage
        .consumer(group, test_workers().consumer)
        .await
        .unwrap();
    run_consumer_until_empty(&stage, group, &consumer, Duration::from_secs(20)).await;
    let (status, body) = waiting.await.expect("the query task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "awaiting_payment");
    app.shutdown().await;
}
