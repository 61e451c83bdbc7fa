//! Unpaid orders expire, on both backends, driven by a controllable clock (no sleeps). The
//! deadline is stored with the order (its `placed_at`, in the event store and the support read
//! model), so any sweeper finds it. Two sweepers racing expire each order once. A paid order
//! never expires. Expiry releases the stock, cancels the payment intent at the gateway and
//! notifies the customer.

use api::auth::Role;
use backbone_tests::scenario::{notification, order_reaches, product_reaches};
use backbone_tests::{eventually, test_on_both_backends, TestApp};
use commands::ManualClock;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use workers::{ExpirySweeper, Sweep};

const TTL: Duration = Duration::from_secs(30 * 60);

fn sweeper(app: &TestApp, clock: &Arc<ManualClock>) -> ExpirySweeper {
    ExpirySweeper::new(
        app.state.shop.clone(),
        app.state.models.clone(),
        clock.clone(),
        TTL,
    )
}

async fn unpaid_orders_expire_once_and_paid_ones_never(app: &TestApp) {
    let admin = app.token("ada", Role::Admin);
    let alice = app.token("alice", Role::Customer);
    let bob = app.token("bob", Role::Customer);
    app.create_product(&admin, "prd_exp", "8.00", 5).await;

    // Alice leaves two orders unpaid; Bob pays his.
    let mut unpaid = Vec::new();
    for quantity in [2, 1] {
        let placed = app.place_order(&alice, &[("prd_exp", quantity)]).await;
        assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
        let order_id = placed.body["order_id"].as_str().unwrap().to_owned();
        order_reaches(
            app,
            &alice,
            &order_id,
            placed.consistency(),
            "awaiting_payment",
        )
        .await;
        unpaid.push(order_id);
    }
    let placed = app.place_order(&bob, &[("prd_exp", 1)]).await;
    let paid_id = placed.body["order_id"].as_str().unwrap().to_owned();
    let payment_id = placed.body["payment_id"].as_str().unwrap().to_owned();
    let paid = app.confirm_payment(&bob, &payment_id, "pm_card_visa").await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    order_reaches(app, &bob, &paid_id, paid.consistency(), "paid").await;
    // The sweep reads the support index: wait until it lists the two unpaid orders.
    let support = app.token("sam", Role::Support);
    eventually(app.wait, || async {
        let a = app
            .get("/v1/support/orders?status=awaiting_payment", &support)
            .await;
        (a.body["orders"].as_array()?.len() == 2).then_some(())
    })
    .await
    .expect("the support view lists the unpaid orders");

    // One minute before the deadline nothing expires.
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    clock.advance(chrono::Duration::minutes(29));
    assert_eq!(
        sweeper(app, &clock).sweep().await.unwrap(),
        Sweep::default()
    );

    // Past it, two sweepers race: each unpaid order expires once; the paid one never.
    clock.advance(chrono::Duration::minutes(2));
    let (a, b) = (sweeper(app, &clock), sweeper(app, &clock));
    let (a, b) = tokio::join!(a.sweep(), b.sweep());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.expired + b.expired, 2, "{a:?} {b:?}");
    for order_id in &unpaid {
        order_reaches(app, &alice, order_id, "", "expired").await;
        // The process managers cancel the intent at the gateway and record it on the payment.
        eventually(app.wait, || async {
            let a = app.get(&format!("/v1/orders/{order_id}"), &alice).await;
            (a.body["payment_status"] == "canceled").then_some(())
        })
        .await
        .expect("the expired order's payment is canceled");
        notification(app, &alice, order_id, "order_expired").await;
        let events = app.stream("order", order_id).await;
        assert_eq!(
            events.count_events("OrderExpired"),
            1,
            "one OrderExpired for {order_id}"
        );
    }
    let bobs = app.get(&format!("/v1/orders/{paid_id}"), &bob).await;
    assert_eq!(bobs.body["status"], "paid");

    // The stock comes back: only Bob's unit is still reserved.
    let product = product_reaches(app, &alice, "prd_exp", 1).await;
    assert_eq!(product["available"], 4);

    // An expired order's intent can no longer be paid.
    let late = app
        .get(&format!("/v1/orders/{}", unpaid[0]), &alice)
        .await
        .body["payment_id"]
        .as_str()
        .map(str::to_owned)
        .expect("a payment id");
    let refused = app.confirm_payment(&alice, &late, "pm_card_visa").await;
    assert!(
        refused.status.is_client_error(),
        "{}: {}",
        refused.status,
        refused.text
    );

    // A later sweep finds nothing more to do.
    clock.advance(chrono::Duration::minutes(10));
    assert_eq!(sweeper(app, &clock).sweep().await.unwrap().expired, 0);
}

test_on_both_backends!(
    unpaid_orders_expire_once_and_paid_ones_never,
    embedded: unpaid_orders_expire_once_and_paid_ones_never_embedded,
    on_dynamodb: unpaid_orders_expire_once_and_paid_ones_never_on_dynamodb,
    workers: true
);
