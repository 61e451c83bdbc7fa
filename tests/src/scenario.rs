//! The shop scenario both backends must pass, written once: a customer browses, fills a cart,
//! checks out and pays; the order history, the notifications, the support search and timeline,
//! the analysts' export and time travel all follow. It drives a running `backbone serve` over
//! HTTP only (through [`TestApp`]) and reads the app's event store for the export comparison.
//!
//! Read models may lag behind commands on either backend (in-process workers, or the AWS
//! fan-out), so every read of a view polls for up to [`TestApp::wait`], passing the command's
//! `consistency` token for read-your-writes.

use crate::{checkout_body, eventually, whole_feed, TestApp};
use api::auth::Role;
use commands::EventEnvelope;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Polls an order (as `token`, reading the write behind `consistency`, when not empty) until
/// its status is `status`.
pub async fn order_reaches(
    app: &TestApp,
    token: &str,
    order_id: &str,
    consistency: &str,
    status: &str,
) -> Value {
    eventually(app.wait, || async {
        let a = app
            .get_consistent(&format!("/v1/orders/{order_id}"), token, consistency)
            .await;
        (a.status == StatusCode::OK && a.body["status"] == status).then_some(a.body)
    })
    .await
    .unwrap_or_else(|| panic!("order {order_id} never became {status}"))
}

/// Polls the catalog until `product` has `reserved` units reserved; returns its view.
pub async fn product_reaches(app: &TestApp, token: &str, product: &str, reserved: u64) -> Value {
    eventually(app.wait, || async {
        let a = app
            .get(&format!("/v1/catalog/products/{product}"), token)
            .await;
        (a.body["reserved"] == reserved).then_some(a.body)
    })
    .await
    .unwrap_or_else(|| panic!("{product} never had {reserved} reserved"))
}

/// Polls the customer's notifications until one of `kind` is there for `order_id`.
pub async fn notification(app: &TestApp, token: &str, order_id: &str, kind: &str) -> Value {
    eventually(app.wait, || async {
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

/// The envelopes of an NDJSON export.
pub fn parse_ndjson(text: &str) -> Vec<EventEnvelope> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an envelope per line"))
        .collect()
}

/// The `feed_cursor` of each line of an NDJSON export.
pub fn ndjson_cursors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            line["feed_cursor"]
                .as_str()
                .expect("each line carries its feed cursor")
                .to_owned()
        })
        .collect()
}

/// What [`customer_buys_and_pays`] left behind, for a backend's own checks.
#[derive(Debug)]
pub struct ShopRun {
    pub cart: String,
    pub order_id: String,
    /// The answer to the first add-to-cart.
    pub first_add: crate::Answer,
    /// The store's whole feed once the export held the order's OrderPaid.
    pub feed: Vec<EventEnvelope>,
    /// The client secret checkout answered, which no store may hold.
    pub client_secret: String,
}

/// The shop flow on a freshly started app with the demo catalog: alice buys 2 espresso and 3
/// sencha (75.30 EUR), pays with the simulated gateway, and every view follows.
pub async fn customer_buys_and_pays(app: &TestApp) -> ShopRun {
    let alice = app.token("alice", Role::Customer);

    // Browse the demo catalog.
    let catalog = app
        .get("/v1/catalog/products?category=coffee", &alice)
        .await;
    assert_eq!(catalog.status, StatusCode::OK, "{}", catalog.text);
    assert_eq!(catalog.body["products"].as_array().unwrap().len(), 3);

    // Cart: open, add two products, change a quantity.
    let cart = app.open_cart(&alice).await;
    let first_add = app.add_item(&alice, &cart, "prd_espresso", 2).await;
    assert_eq!(first_add.status, StatusCode::OK, "{}", first_add.text);
    let added = app.add_item(&alice, &cart, "prd_sencha", 1).await;
    assert_eq!(added.body["lines"].as_array().unwrap().len(), 2);
    let changed = app
        .send(
            Method::PATCH,
            &format!("/v1/carts/{cart}/items/prd_sencha"),
            Some(&alice),
            Some(json!({ "quantity": 3 })),
            &[
                ("x-correlation-id", "corr-flow-1"),
                ("x-request-id", "req-flow-1"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.headers["x-correlation-id"], "corr-flow-1");
    // 2 x 24.90 + 3 x 8.50
    assert_eq!(
        changed.body["total"],
        json!({ "amount": "75.30", "currency": "EUR" })
    );
    let got = app.get(&format!("/v1/carts/{cart}"), &alice).await;
    assert_eq!(got.body["total"]["amount"], "75.30");

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
    assert_eq!(checkout.body["status"], "awaiting_payment");
    assert_eq!(checkout.body["total"]["amount"], "75.30");
    let client_secret = checkout.body["client_secret"]
        .as_str()
        .expect("checkout answers the client secret")
        .to_string();
    let intent_id = checkout.body["intent_id"].as_str().unwrap().to_string();
    the_owner_gets_the_client_secret_again(app, &payment_id, &intent_id, &client_secret).await;
    let placed = order_reaches(
        app,
        &alice,
        &order_id,
        checkout.consistency(),
        "awaiting_payment",
    )
    .await;
    assert_eq!(placed["lines"].as_array().unwrap().len(), 2);
    // Stock reserved, seen through the catalog read model.
    let espresso = product_reaches(app, &alice, "prd_espresso", 2).await;
    assert_eq!(espresso["available"], 98);

    // Pay with the simulated gateway; the process managers mark the order paid.
    let paid = app
        .confirm_payment(&alice, &payment_id, "pm_card_visa")
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    assert_eq!(paid.body["status"], "succeeded");
    let order = order_reaches(app, &alice, &order_id, paid.consistency(), "paid").await;
    assert_eq!(order["payment_status"], "succeeded");
    assert_eq!(order["paid"]["amount"], "75.30");

    // Order history and notification.
    let history = app.get("/v1/orders", &alice).await;
    let orders = history.body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], order_id.as_str());
    let confirmed = notification(app, &alice, &order_id, "order_confirmed").await;
    assert!(confirmed["subject"].as_str().unwrap().contains(&order_id));

    support_finds_the_order(app, &order_id, &intent_id).await;
    let feed = analyst_exports_the_feed(app, &cart, &order_id).await;
    analyst_travels_in_time(app, &cart).await;
    no_view_shows(app, &client_secret, &order_id, &payment_id).await;
    ShopRun {
        cart,
        order_id,
        first_add,
        feed,
        client_secret,
    }
}

/// The client secret is not stored: asked for again, it comes from the payment provider, to
/// the order's customer only (anyone else learns nothing: 404).
async fn the_owner_gets_the_client_secret_again(
    app: &TestApp,
    payment_id: &str,
    intent_id: &str,
    client_secret: &str,
) {
    let path = format!("/v1/payments/{payment_id}/client-secret");
    let asked = app.get(&path, &app.token("alice", Role::Customer)).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.text);
    assert_eq!(asked.body["client_secret"], client_secret);
    assert_eq!(asked.body["intent_id"], intent_id);
    assert_eq!(asked.body["payment_id"], payment_id);
    assert_eq!(asked.headers["cache-control"], "no-store");
    let bobs = app.get(&path, &app.token("bob", Role::Customer)).await;
    assert_eq!(bobs.status, StatusCode::NOT_FOUND, "{}", bobs.text);
    assert_eq!(bobs.code(), "not_found");
    assert!(!bobs.text.contains(client_secret));
    let unknown = app
        .get(
            "/v1/payments/pay_missing/client-secret",
            &app.token("alice", Role::Customer),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
}

/// No view (the export, time travel, the order, its timeline, the notifications) shows the
/// client secret.
pub async fn no_view_shows(app: &TestApp, secret: &str, order_id: &str, payment_id: &str) {
    let alice = app.token("alice", Role::Customer);
    let support = app.token("sam", Role::Support);
    let analyst = app.token("ana", Role::Analyst);
    for (path, token) in [
        ("/v1/events".to_owned(), &analyst),
        (format!("/v1/streams/payment/{payment_id}"), &analyst),
        (format!("/v1/streams/payment/{payment_id}?at=2"), &analyst),
        (format!("/v1/streams/order/{order_id}"), &analyst),
        (format!("/v1/orders/{order_id}"), &alice),
        ("/v1/me/notifications".to_owned(), &alice),
        (format!("/v1/support/orders/{order_id}/timeline"), &support),
    ] {
        let a = app.get(&path, token).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        assert!(!a.text.contains(secret), "{path} shows the client secret");
    }
}

/// Support: search by email and intent, and the order's timeline.
async fn support_finds_the_order(app: &TestApp, order_id: &str, intent_id: &str) {
    let support = app.token("sam", Role::Support);
    let found = eventually(app.wait, || async {
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
    assert_eq!(found.body["orders"][0]["order_id"], order_id);
    let by_intent = app
        .get(
            &format!("/v1/support/orders?intent_id={intent_id}"),
            &support,
        )
        .await;
    assert_eq!(by_intent.body["orders"][0]["order_id"], order_id);
    let timeline = eventually(app.wait, || async {
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
}

/// Analyst: the NDJSON export is the store's durable feed, with its filters and the metadata
/// each request gave its events. Returns the feed.
async fn analyst_exports_the_feed(app: &TestApp, cart: &str, order_id: &str) -> Vec<EventEnvelope> {
    // With the `pii` scope the export is the feed itself (without it, personal data is masked).
    let analyst = app.scoped_token("ana", Role::Analyst, "pii");
    let exported = eventually(app.wait, || async {
        let export = app.get("/v1/events", &analyst).await;
        assert_eq!(export.status, StatusCode::OK);
        assert_eq!(
            export.headers["content-type"].to_str().unwrap(),
            "application/x-ndjson"
        );
        let events = parse_ndjson(&export.text);
        events
            .iter()
            .any(|e| e.event_type == "OrderPaid" && e.stream_id == order_id)
            .then(|| (events, ndjson_cursors(&export.text)))
    })
    .await
    .expect("OrderPaid reaches the feed");
    let (exported, cursors) = exported;
    let feed = whole_feed(app.state.store.as_ref()).await;
    assert!(exported.len() > 10, "{} events", exported.len());
    assert_eq!(
        exported[..],
        feed[..exported.len()],
        "the export is the feed"
    );
    crate::assert_partitions_gapless(&feed);

    // Filters.
    let placed_only = parse_ndjson(&app.get("/v1/events?type=OrderPlaced", &analyst).await.text);
    assert_eq!(placed_only.len(), 1);
    let one_order = parse_ndjson(
        &app.get(&format!("/v1/events?stream=order:{order_id}"), &analyst)
            .await
            .text,
    );
    assert!(one_order.iter().all(|e| e.stream_id == order_id));
    assert_eq!(one_order.first().map(|e| e.sequence), Some(1));
    // A line's cursor is where an export resumes after it.
    let after = &cursors[4];
    let tail = parse_ndjson(
        &app.get(&format!("/v1/events?after={after}&limit=2"), &analyst)
            .await
            .text,
    );
    assert_eq!(tail[..], exported[5..7]);

    // Event metadata carries the actor and the request.
    let first = &exported
        .iter()
        .find(|e| e.stream_id == cart)
        .unwrap()
        .metadata;
    assert_eq!(first.actor.subject, "alice");
    assert_eq!(first.actor.role, "customer");
    assert!(first.request_id.is_some());
    // The correlation and request ids of a request end up in its events' metadata.
    let quantity_changed = exported
        .iter()
        .find(|e| e.stream_id == cart && e.metadata.correlation_id == "corr-flow-1")
        .expect("an event of the PATCH request");
    assert_eq!(
        quantity_changed.metadata.request_id.as_deref(),
        Some("req-flow-1")
    );
    // The process managers carry the correlation id on: OrderPaid shares the confirm's.
    let succeeded = exported
        .iter()
        .find(|e| e.event_type == "PaymentSucceeded")
        .unwrap();
    let order_paid = exported
        .iter()
        .find(|e| e.event_type == "OrderPaid")
        .unwrap();
    assert_eq!(
        order_paid.metadata.correlation_id,
        succeeded.metadata.correlation_id
    );
    assert_eq!(
        order_paid.metadata.causation_id,
        Some(succeeded.event_id.to_string())
    );
    feed
}

/// Time travel: the cart after its first event, by version and by time, and now.
async fn analyst_travels_in_time(app: &TestApp, cart: &str) {
    let analyst = app.token("ana", Role::Analyst);
    let at_one = app
        .get(&format!("/v1/streams/cart/{cart}?at=1"), &analyst)
        .await;
    assert_eq!(at_one.status, StatusCode::OK, "{}", at_one.text);
    assert_eq!(at_one.body["version"], 1);
    assert_eq!(at_one.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(at_one.body["state"]["status"], "open");
    assert_eq!(at_one.body["state"]["lines"], json!({}));
    let first_at = at_one.body["events"][0]["occurred_at"].as_str().unwrap();
    let by_time = app
        .get(
            &format!(
                "/v1/streams/cart/{cart}?at={}",
                first_at.replace('+', "%2B")
            ),
            &analyst,
        )
        .await;
    assert_eq!(by_time.body["version"], 1, "{}", by_time.text);
    let latest = app.get(&format!("/v1/streams/cart/{cart}"), &analyst).await;
    assert_eq!(latest.body["state"]["status"], "checked_out");
    assert_eq!(
        app.get("/v1/streams/cart/cart_missing", &analyst)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
