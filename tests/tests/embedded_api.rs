//! The embedded backbone over HTTP, end to end: every test starts its own app on a fresh data
//! directory and talks to it with reqwest. The shop scenario is the one the AWS suite runs too
//! ([`backbone_tests::scenario`]).

use api::auth::Role;
use backbone_tests::scenario::{customer_buys_and_pays, notification, order_reaches};
use backbone_tests::{
    checkout_body, eventually, files_containing, settle, spawn_app, spawn_app_in, whole_feed,
    Answer, TestApp,
};
use commands::FeedCursor;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A fresh app, and a token for alice, the customer most tests act as.
async fn app_with_alice() -> (TestApp, String) {
    let app = spawn_app().await;
    let alice = app.token("alice", Role::Customer);
    (app, alice)
}

async fn available(app: &TestApp, token: &str, product: &str) -> u64 {
    let a = app
        .get(&format!("/v1/catalog/products/{product}"), token)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body["available"].as_u64().expect("available")
}

#[tokio::test]
async fn a_customer_buys_and_pays_and_every_view_follows() {
    let app = spawn_app().await;
    let run = customer_buys_and_pays(&app).await;
    assert!(
        run.first_add.position() > 0,
        "commands answer their feed position"
    );
    no_client_secret_reaches_the_data_directory(&app, &run.client_secret).await;
    // The same search does find what is stored, such as the order id.
    assert!(!files_containing(app.data_dir.path(), &run.order_id)
        .0
        .is_empty());
    app.shutdown().await;
}

/// A byte search of every file of the data directory, once every worker has caught up: the
/// client secret checkout answered is in none of them (events, idempotency records, snapshots,
/// read models, checkpoints, the outbox), neither in a database nor in its `-wal` file.
async fn no_client_secret_reaches_the_data_directory(app: &TestApp, secret: &str) {
    settle(&app.state).await;
    let dir = app.data_dir.path();
    for file in [
        api::compose::EVENTS_FILE,
        api::compose::READ_MODELS_FILE,
        api::compose::WORKERS_FILE,
    ] {
        for name in [file.to_owned(), format!("{file}-wal")] {
            assert!(dir.join(&name).is_file(), "no {name} to search");
        }
    }
    let (found, read) = files_containing(dir, secret);
    assert!(read >= 6, "only {read} files read");
    assert!(found.is_empty(), "the client secret is stored in {found:?}");
}

/// History written before `PaymentIntentCreated` v2 holds the client secret in its v1 payload.
/// Every read path upcasts it away: a load and the feed through the app's store (an
/// `UpcastingStore` over `DomainUpcaster`), the analysts' export and time travel, and the read
/// models built from it.
#[tokio::test]
async fn a_stored_v1_intent_created_never_shows_its_client_secret() {
    let app = spawn_app().await;
    let secret = "pi_legacy_secret_v1StoredThisOnce";
    let stream = commands::StreamRef::new(domain::StreamType::Payment, "pay_legacy");
    let raw = |event_type: &str, payload: Value| commands::NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event_type.to_owned(),
        event_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: payload.into(),
        metadata: commands::Metadata::default(),
    };
    // Appended as stored then: the store's append writes payloads as given.
    app.state
        .store
        .append(commands::Commit {
            streams: vec![commands::StreamAppend {
                stream: stream.clone(),
                expected_version: 0,
                events: vec![
                    raw(
                        "PaymentRequested",
                        json!({ "payment_id": "pay_legacy", "order_id": "ord_legacy",
                                "amount": { "amount": "12.00", "currency": "EUR" } }),
                    ),
                    raw(
                        "PaymentIntentCreated",
                        json!({ "payment_id": "pay_legacy", "intent_id": "pi_legacy",
                                "client_secret_ref": secret }),
                    ),
                ],
                snapshot: None,
            }],
            idempotency: None,
        })
        .await
        .expect("append the legacy history");
    settle(&app.state).await;

    let check = |e: &commands::EventEnvelope, path: &str| {
        assert_eq!(e.event_type, "PaymentIntentCreated", "{path}");
        assert_eq!(e.event_version, 2, "{path}: upcast to v2");
        assert_eq!(
            e.payload.value(),
            &json!({ "payment_id": "pay_legacy", "intent_id": "pi_legacy" }),
            "{path}"
        );
    };
    let loaded = app.state.store.load(&stream).await.expect("load");
    check(&loaded.events[1], "load");
    let feed = whole_feed(app.state.store.as_ref()).await;
    let from_feed: Vec<_> = feed
        .iter()
        .filter(|e| e.stream_id == "pay_legacy")
        .collect();
    check(from_feed[1], "feed");
    assert!(!serde_json::to_string(&feed).unwrap().contains(secret));

    let analyst = app.token("ana", Role::Analyst);
    let export = app.get("/v1/events", &analyst).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(
        export.text.contains("pi_legacy"),
        "the export holds the event"
    );
    assert!(!export.text.contains(secret), "the export shows the secret");
    let time = from_feed[1].occurred_at.to_rfc3339().replace('+', "%2B");
    for path in [
        "/v1/streams/payment/pay_legacy".to_owned(),
        "/v1/streams/payment/pay_legacy?at=2".to_owned(),
        format!("/v1/streams/payment/pay_legacy?at={time}"),
        "/v1/events?stream=payment:pay_legacy".to_owned(),
    ] {
        let a = app.get(&path, &analyst).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        assert!(a.text.contains("pi_legacy"), "{path}: {}", a.text);
        assert!(!a.text.contains(secret), "{path} shows the secret");
    }
    let state = app
        .get("/v1/streams/payment/pay_legacy", &analyst)
        .await
        .body["state"]
        .clone();
    assert_eq!(state["intent_id"], "pi_legacy");
    assert_eq!(state["status"], "intent_created");
    assert!(state.get("client_secret_ref").is_none(), "{state}");

    // The secret stays where this test put it, in the event log, and nowhere else: not in the
    // read models the projections built from the upcast event, nor the workers' checkpoints.
    let (found, _) = files_containing(app.data_dir.path(), secret);
    let names: Vec<String> = found
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty()
            && names
                .iter()
                .all(|n| n.starts_with(api::compose::EVENTS_FILE)),
        "{names:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn roles_are_enforced_per_route_group() {
    let (app, alice) = app_with_alice().await;
    let bob = app.token("bob", Role::Customer);
    let support = app.token("sam", Role::Support);
    let admin = app.token("ada", Role::Admin);
    let analyst = app.token("ana", Role::Analyst);

    // 401: no token, a garbage token, an expired token, a token signed with another secret.
    let none = app.send(Method::GET, "/v1/orders", None, None, &[]).await;
    none.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(none.body["error"]["request_id"].as_str().is_some());
    assert_eq!(
        app.get("/v1/orders", "not-a-jwt").await.status,
        StatusCode::UNAUTHORIZED
    );
    let expired = app
        .get("/v1/orders", &app.expired_token("alice", Role::Customer))
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.body["error"]["message"], "token expired");
    let forged =
        api::auth::mint_hs256(b"another", "alice", Role::Admin, Duration::from_secs(60)).unwrap();
    assert_eq!(
        app.get("/v1/orders", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );

    // 403: a role outside the route's group.
    let forbidden = [
        (Method::POST, "/v1/carts", &support, Some(json!({}))),
        (Method::GET, "/v1/orders", &admin, None),
        (Method::GET, "/v1/me/notifications", &analyst, None),
        (
            Method::POST,
            "/v1/admin/products/prd_espresso/restock",
            &alice,
            Some(json!({ "quantity": 1 })),
        ),
        (
            Method::POST,
            "/v1/admin/products/prd_espresso/restock",
            &support,
            Some(json!({ "quantity": 1 })),
        ),
        (Method::GET, "/v1/events", &alice, None),
        (Method::GET, "/v1/events", &admin, None),
        (Method::GET, "/v1/streams/cart/cart_1", &support, None),
        (Method::GET, "/v1/support/orders", &alice, None),
        (Method::GET, "/v1/support/orders", &analyst, None),
        (Method::GET, "/v1/orders/ord_1", &analyst, None),
    ];
    for (method, path, token, body) in forbidden {
        let a = app.send(method.clone(), path, Some(token), body, &[]).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            a.text
        );
        assert_eq!(a.code(), "forbidden");
    }

    // 404: another customer's cart, order and payment.
    let checkout = app.place_order_ok(&alice, &[("prd_filter", 1)]).await;
    let (order_id, payment_id) = (&checkout.order_id, &checkout.payment_id);
    let alice_cart = app.open_cart(&alice).await;
    for a in [
        app.get(&format!("/v1/carts/{alice_cart}"), &bob).await,
        app.add_item(&bob, &alice_cart, "prd_filter", 1).await,
        app.get_consistent(
            &format!("/v1/orders/{order_id}"),
            &bob,
            checkout.answer.consistency(),
        )
        .await,
        app.cancel_order(&bob, order_id, "mine now").await,
        app.confirm_payment(&bob, payment_id, "pm_card_visa").await,
    ] {
        a.assert_error(StatusCode::NOT_FOUND, "not_found");
    }

    // Allowed: staff read any order, everyone reads the catalog, admin administers.
    for token in [&support, &admin] {
        let a = app.get(&format!("/v1/orders/{order_id}"), token).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    for token in [&alice, &support, &admin, &analyst] {
        assert_eq!(
            app.get("/v1/catalog/products", token).await.status,
            StatusCode::OK
        );
    }
    let teapot = json!({
        "product_id": "prd_teapot", "name": "Cast iron teapot", "category": "tea",
        "price": { "amount": "39.00", "currency": "EUR" }, "initial_stock": 4
    });
    let created = app.create_product_from(&admin, teapot).await;
    let teapot = app
        .get_consistent(
            "/v1/catalog/products/prd_teapot",
            &alice,
            created.consistency(),
        )
        .await;
    assert_eq!(
        teapot.status,
        StatusCode::OK,
        "read your writes: {}",
        teapot.text
    );
    assert_eq!(teapot.body["available"], 4);
    let tea = app.get("/v1/catalog/products?category=tea", &alice).await;
    assert_eq!(tea.body["products"].as_array().unwrap().len(), 3);
    let repriced = app
        .send(
            Method::PUT,
            "/v1/admin/products/prd_teapot/price",
            Some(&admin),
            Some(json!({ "price": { "amount": "35.00", "currency": "EUR" } })),
            &[],
        )
        .await;
    assert_eq!(repriced.status, StatusCode::OK, "{}", repriced.text);
    let retired = app.product_action(&admin, "prd_teapot", "retire").await;
    assert_eq!(retired.status, StatusCode::OK, "{}", retired.text);
    assert_eq!(retired.body["status"], "retired");
    assert_eq!(
        app.post(
            "/v1/admin/products/prd_nothing/restock",
            &admin,
            json!({ "quantity": 1 })
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_once() {
    let (app, alice) = app_with_alice().await;
    let cart = app.open_cart(&alice).await;
    let path = format!("/v1/carts/{cart}/items");
    let add = async |body: Value| app.post_keyed(&path, &alice, body, "k-1").await;
    let first = add(json!({ "product_id": "prd_decaf", "quantity": 2 })).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // The same key and body (keys in another order) replays the first answer.
    let again = add(json!({ "quantity": 2, "product_id": "prd_decaf" })).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let cart_now = app.get(&format!("/v1/carts/{cart}"), &alice).await;
    assert_eq!(cart_now.body["lines"][0]["quantity"], 2, "added once");
    assert_eq!(cart_now.body["version"], 2);
    // The same key with another body is refused.
    let other = add(json!({ "product_id": "prd_decaf", "quantity": 3 })).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert_eq!(other.code(), "idempotency_key_reused");
    // Without a key every request counts.
    app.add_item(&alice, &cart, "prd_decaf", 1).await;
    app.add_item(&alice, &cart, "prd_decaf", 1).await;
    let cart_now = app.get(&format!("/v1/carts/{cart}"), &alice).await;
    assert_eq!(cart_now.body["lines"][0]["quantity"], 4);

    // A replayed checkout answers the same order (and places only one).
    let checkout_path = format!("/v1/carts/{cart}/checkout");
    let body = checkout_body("alice@example.com");
    let one = app
        .post_keyed(&checkout_path, &alice, body.clone(), "co-1")
        .await;
    assert_eq!(one.status, StatusCode::CREATED, "{}", one.text);
    let two = app.post_keyed(&checkout_path, &alice, body, "co-1").await;
    assert_eq!(two.status, StatusCode::CREATED);
    assert_eq!(two.body, one.body);
    assert_eq!(two.headers["idempotent-replayed"], "true");
    // The replay's client secret was asked of the gateway again: no store kept it.
    assert!(two.body["client_secret"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let placed = app
        .state
        .store
        .feed(&FeedCursor::start(), 10_000)
        .await
        .unwrap();
    assert_eq!(
        placed
            .iter()
            .filter(|e| e.event_type == "OrderPlaced")
            .count(),
        1
    );
    // Another customer's identical key is a different command.
    let bob = app.token("bob", Role::Customer);
    let bobs = app.post_keyed("/v1/carts", &bob, json!({}), "k-1").await;
    assert_eq!(bobs.status, StatusCode::CREATED, "{}", bobs.text);
    app.shutdown().await;
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let (app, alice) = app_with_alice().await;
    let admin = app.token("ada", Role::Admin);
    let cart = app.open_cart(&alice).await;
    let items = format!("/v1/carts/{cart}/items");
    let added = app.add_item(&alice, &cart, "prd_decaf", 1).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);

    // Each case: where it is posted, by whom, the body, and the field the refusal names.
    let products = "/v1/admin/products";
    let checkout = format!("/v1/carts/{cart}/checkout");
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            &items,
            &alice,
            json!({ "product_id": "prd_decaf", "quantity": 0 }),
            "quantity",
        ),
        (
            &items,
            &alice,
            json!({ "product_id": "prd_decaf", "quantity": 100 }),
            "quantity",
        ),
        (
            &items,
            &alice,
            json!({ "product_id": "prd_decaf", "quantity": "two" }),
            "quantity",
        ),
        (
            &items,
            &alice,
            json!({ "product_id": "prd decaf!", "quantity": 1 }),
            "product_id",
        ),
        (
            &items,
            &alice,
            json!({ "product_id": "prd_decaf", "quantity": 1, "gift": true }),
            "gift",
        ),
        (&items, &alice, json!({ "quantity": 1 }), "product_id"),
        (
            products,
            &admin,
            json!({ "product_id": "prd_x", "name": "X", "category": "misc",
                    "price": { "amount": "1.00", "currency": "EURO" } }),
            "price.currency",
        ),
        (
            products,
            &admin,
            json!({ "product_id": "prd_x", "name": "X", "category": "misc",
                    "price": { "amount": "1.001", "currency": "EUR" } }),
            "price.amount",
        ),
        (&checkout, &alice, checkout_body("not-an-email"), "email"),
        (
            &checkout,
            &alice,
            json!({ "email": "a@example.com",
                    "shipping_address": { "name": "A", "line1": "L", "city": "C",
                                          "postal_code": "P", "country": "GB", "floor": 3 } }),
            "shipping_address.floor",
        ),
    ];
    for (path, token, body, field) in cases {
        let answer = app.post(path, token, body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{field}: {}",
            answer.text
        );
        assert_eq!(answer.code(), "validation_failed", "{}", answer.text);
        assert_eq!(answer.field(), field, "{}", answer.text);
        assert!(answer.body["error"]["request_id"].as_str().is_some());
    }

    // Malformed JSON.
    let malformed = app
        .client
        .post(app.url(&items))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"product_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");

    // A body over 64 KiB.
    let big = json!({ "product_id": "prd_decaf", "quantity": 1, "note": "x".repeat(65 * 1024) });
    let too_large = app.post(&items, &alice, big).await;
    assert_eq!(
        too_large.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        too_large.text
    );
    assert_eq!(too_large.code(), "payload_too_large");

    // Query parameters are validated too.
    let support = app.token("sam", Role::Support);
    let bad_status = app.get("/v1/support/orders?status=lost", &support).await;
    assert_eq!(
        bad_status.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_status.text
    );
    assert_eq!(bad_status.field(), "status");
    let bad_at = app
        .get(
            &format!("/v1/streams/cart/{cart}?at=yesterday"),
            &app.token("ana", Role::Analyst),
        )
        .await;
    assert_eq!(bad_at.field(), "at");
    app.shutdown().await;
}

#[tokio::test]
async fn checkout_beyond_stock_is_refused_with_409() {
    let (app, alice) = app_with_alice().await;
    // The demo catalog has 3 Earl Grey.
    let refused = app.place_order(&alice, &[("prd_earl_grey", 4)]).await;
    refused.assert_error(StatusCode::CONFLICT, "insufficient_stock");
    assert_eq!(
        available(&app, &alice, "prd_earl_grey").await,
        3,
        "nothing reserved"
    );

    let cart = app.open_cart(&alice).await;
    app.add_item(&alice, &cart, "prd_earl_grey", 3).await;
    let checkout = format!("/v1/carts/{cart}/checkout");
    let ok = app
        .post(&checkout, &alice, checkout_body("alice@example.com"))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    let twice = app
        .post(&checkout, &alice, checkout_body("alice@example.com"))
        .await;
    twice.assert_error(StatusCode::CONFLICT, "cart_checked_out");
    app.shutdown().await;
}

#[tokio::test]
async fn a_declined_card_fails_the_payment_and_notifies_the_customer() {
    let (app, alice) = app_with_alice().await;
    let checkout = app.place_order_ok(&alice, &[("prd_kettle", 1)]).await;
    let (order_id, payment_id) = (&checkout.order_id, &checkout.payment_id);
    let declined = app
        .confirm_payment(&alice, payment_id, "4000000000000002")
        .await;
    assert_eq!(declined.status, StatusCode::OK, "{}", declined.text);
    assert_eq!(declined.body["status"], "failed");
    let order = order_reaches(
        &app,
        &alice,
        order_id,
        declined.consistency(),
        "payment_failed",
    )
    .await;
    assert_eq!(order["payment_status"], "failed");
    let n = notification(&app, &alice, order_id, "payment_failed").await;
    assert!(n["body"].as_str().is_some());
    let unknown = app
        .confirm_payment(&alice, payment_id, "pm_card_bogus")
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.field(), "payment_method");
    app.shutdown().await;
}

#[tokio::test]
async fn cancelling_an_order_releases_its_stock_in_the_catalog() {
    let (app, alice) = app_with_alice().await;
    let before = available(&app, &alice, "prd_grinder").await;
    let checkout = app.place_order_ok(&alice, &[("prd_grinder", 2)]).await;
    let reserved = app
        .get_consistent(
            "/v1/catalog/products/prd_grinder",
            &alice,
            checkout.answer.consistency(),
        )
        .await;
    assert_eq!(reserved.body["available"].as_u64(), Some(before - 2));
    assert_eq!(reserved.body["reserved"], 2);

    let order_id = &checkout.order_id;
    let cancelled = app.cancel_order(&alice, order_id, "changed my mind").await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.body["status"], "cancelled");
    order_reaches(&app, &alice, order_id, cancelled.consistency(), "cancelled").await;
    let released = eventually(WAIT, || async {
        let a = available(&app, &alice, "prd_grinder").await;
        (a == before).then_some(a)
    })
    .await;
    assert_eq!(
        released,
        Some(before),
        "the process manager released the stock"
    );
    notification(&app, &alice, order_id, "order_cancelled").await;
    let blank = app.cancel_order(&alice, order_id, " ").await;
    assert_eq!(blank.field(), "reason");
    app.shutdown().await;
}

/// Opens a cart under the Idempotency-Key `restart-1`.
async fn open_cart_keyed(app: &TestApp, token: &str) -> Answer {
    app.post_keyed("/v1/carts", token, json!({}), "restart-1")
        .await
}

#[tokio::test]
async fn a_restart_on_the_same_data_keeps_everything_and_gets_ready() {
    let (app, alice) = app_with_alice().await;
    let checkout = app.place_order_ok(&alice, &[("prd_scale", 1)]).await;
    let (order_id, payment_id) = (&checkout.order_id, &checkout.payment_id);
    let placed = checkout.answer.consistency();
    order_reaches(&app, &alice, order_id, placed, "awaiting_payment").await;
    let keyed = open_cart_keyed(&app, &alice).await;
    assert_eq!(keyed.status, StatusCode::CREATED, "{}", keyed.text);
    let head_before = app.state.store.head().await.unwrap();
    let dir = app.stop().await;

    let app = spawn_app_in(dir).await;
    let alice = app.token("alice", Role::Customer);
    let ready = eventually(WAIT, || async {
        let a = app.send(Method::GET, "/readyz", None, None, &[]).await;
        (a.status == StatusCode::OK).then_some(a)
    })
    .await
    .expect("ready after a restart");
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(
        app.state.store.head().await.unwrap(),
        head_before,
        "the demo catalog is not seeded twice"
    );
    // Idempotency keys live in the event store: they survive the restart.
    let replayed = open_cart_keyed(&app, &alice).await;
    assert_eq!(replayed.status, StatusCode::CREATED);
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!(replayed.body, keyed.body);
    // Read-your-writes with a token from before the restart answers at once.
    let order = order_reaches(&app, &alice, order_id, placed, "awaiting_payment").await;
    assert_eq!(order["order_id"], order_id.as_str());
    let products = app.get("/v1/catalog/products", &alice).await;
    assert_eq!(products.body["products"].as_array().unwrap().len(), 8);
    // The payment can still be completed after the restart.
    let paid = app
        .confirm_payment(&alice, payment_id, "4242424242424242")
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    order_reaches(&app, &alice, order_id, paid.consistency(), "paid").await;
    app.shutdown().await;
}

#[tokio::test]
async fn operations_endpoints_answer_without_a_token() {
    let app = spawn_app().await;
    let health = app.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = eventually(WAIT, || async {
        let a = app.send(Method::GET, "/readyz", None, None, &[]).await;
        (a.status == StatusCode::OK).then_some(a)
    })
    .await
    .expect("ready");
    assert!(ready.body["workers"]["projection:catalog"]["caught_up"]
        .as_bool()
        .unwrap());

    // A command so the latency histogram has a sample.
    let alice = app.token("alice", Role::Customer);
    app.open_cart(&alice).await;
    let metrics = app.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for name in [
        "backbone_command_duration_seconds_bucket",
        "backbone_projection_lag_positions",
        "backbone_projection_lag_seconds",
        "backbone_webhook_outcomes_total",
        "backbone_command_conflicts_total",
    ] {
        assert!(
            metrics.text.contains(name),
            "no {name} in\n{}",
            metrics.text
        );
    }
    assert!(metrics.text.contains("command=\"POST /v1/carts\""));

    let doc = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/carts/{id}/checkout",
        "/v1/payments/{payment_id}/client-secret",
        "/v1/events",
        "/v1/support/orders",
    ] {
        assert!(doc.body["paths"].get(path).is_some(), "{path} missing");
    }

    // Request ids are echoed (given or generated) and errors carry them.
    let missing = app
        .send(
            Method::GET,
            "/v1/nothing",
            None,
            None,
            &[("x-request-id", "req-42")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["x-request-id"], "req-42");
    assert_eq!(missing.body["error"]["request_id"], "req-42");
    assert_eq!(missing.code(), "not_found");
    let generated = app.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(generated.headers["x-request-id"].len(), 36);
    let wrong_method = app
        .send(Method::DELETE, "/v1/orders", Some(&alice), None, &[])
        .await;
    wrong_method.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.shutdown().await;
}

#[tokio::test]
async fn an_admin_rebuilds_one_projection_while_the_server_keeps_serving() {
    let app = spawn_app().await;
    let admin = app.token("ops", Role::Admin);
    let alice = app.token("alice", Role::Customer);
    let support = app.token("sam", Role::Support);
    let placed = app.place_order_ok(&alice, &[("prd_espresso", 2)]).await;
    let order_id = &placed.order_id;
    order_reaches(
        &app,
        &alice,
        order_id,
        placed.answer.consistency(),
        "awaiting_payment",
    )
    .await;
    // The view once the payment intent is recorded too (it follows the checkout).
    let before = eventually(WAIT, || async {
        let a = app.get(&format!("/v1/orders/{order_id}"), &alice).await;
        a.body["intent_id"].is_string().then_some(a.body)
    })
    .await
    .expect("the intent reaches the order history");
    let stock_before = app
        .get_consistent(
            "/v1/catalog/products/prd_espresso",
            &alice,
            placed.answer.consistency(),
        )
        .await
        .body["available"]
        .as_u64()
        .unwrap();

    // Only admins manage projections.
    for token in [&alice, &support] {
        let a = app.rebuild_projection(token, "order_history").await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    }
    let unknown = app.rebuild_projection(&admin, "nope").await;
    unknown.assert_error(StatusCode::NOT_FOUND, "not_found");

    let listed = app.get("/v1/admin/projections", &admin).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let names: Vec<&str> = listed.body["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["catalog", "notifications", "order_history", "support"]
    );

    let started = app.rebuild_projection(&admin, "order_history").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    assert_eq!(started.body["rebuild"]["projection"], "order_history");

    // Meanwhile the shop keeps working: a new order shows in the catalog's stock.
    let second = app.place_order_ok(&alice, &[("prd_espresso", 1)]).await;
    let after = second.answer.consistency();
    let stock = eventually(WAIT, || async {
        let a = app
            .get_consistent("/v1/catalog/products/prd_espresso", &alice, after)
            .await;
        a.body["available"].as_u64()
    })
    .await
    .unwrap();
    assert_eq!(
        stock + 1,
        stock_before,
        "the catalog followed the second order"
    );

    // The rebuild finishes, and the rebuilt order history has both orders as before.
    let done = eventually(WAIT, || async {
        let a = app.get("/v1/admin/projections", &admin).await;
        a.body["projections"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "order_history" && p["rebuild"]["state"] == "done")
            .cloned()
    })
    .await
    .expect("the rebuild finished");
    assert!(done["rebuild"]["events"].as_u64().unwrap() > 0, "{done}");
    assert!(done["rebuild"]["finished_at"].is_string(), "{done}");
    let rebuilt = order_reaches(&app, &alice, order_id, after, "awaiting_payment").await;
    assert_eq!(
        rebuilt, before,
        "the rebuilt view equals the one built live"
    );
    order_reaches(&app, &alice, &second.order_id, after, "awaiting_payment").await;
    let listed = eventually(WAIT, || async {
        let a = app.get("/v1/orders", &alice).await;
        (a.body["orders"].as_array()?.len() == 2).then_some(a.body)
    })
    .await;
    assert!(listed.is_some(), "both orders are listed after the rebuild");
    app.shutdown().await;
}
