//! A customer's personal data is erased while the history stays, on both backends.
//!
//! Erin places two orders (one paid). Her email and address are sealed in the event log from
//! the start (a byte search of the store finds them nowhere but in the read models' copies), and
//! analysts without the `pii` scope see them masked, with a stable pseudonym for her id. An admin
//! erases her: from then on every read path shows `[erased]` (her orders and the support view,
//! support search, her notifications, time travel, the export), a notification called for after
//! the erasure is cancelled and never sent, and her orders keep their totals and statuses. A
//! byte search of the whole embedded data directory (databases and WALs) or a scan of every
//! DynamoDB table finds neither her email nor her address line, and rebuilding every projection
//! from zero gives the same erased views. She can still shop: a new order is readable again.
//! On DynamoDB the data keys are wrapped with moto's KMS.

use api::auth::Role;
use backbone_tests::aws::{items_containing, spawn_aws_app_configured};
use backbone_tests::scenario::parse_ndjson;
use backbone_tests::{eventually, files_containing, settle, spawn_app, spawn_app_in, TestApp};
use projections::all_projections;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ERIN: &str = "erin";

/// Erin's personal data, unique per test so that byte searches mean something.
struct Person {
    email: String,
    line1: String,
}

impl Person {
    fn new() -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
        Self {
            email: format!("erin.{tag}@example.com"),
            line1: format!("7 Forget-Me Lane {tag}"),
        }
    }

    fn checkout(&self) -> Value {
        json!({
            "email": self.email,
            "shipping_address": {
                "name": "Erin Erasmus",
                "line1": self.line1,
                "city": "Leiden",
                "postal_code": "2311 EZ",
                "country": "NL"
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_customer_leaves_no_personal_data_embedded() {
    let app = spawn_app().await;
    let erin = Person::new();
    let other = Person::new();
    let before = erase_and_check(&app, &erin, &other).await;

    // The SQLite files, WALs included: nothing of erin's, while the read models' copy of the
    // other customer's email shows the search sees what is there.
    settle(&app.state).await;
    no_file_holds(&app, &erin);
    let (found, _) = files_containing(app.data_dir.path(), &other.email);
    assert!(
        found
            .iter()
            .all(|f| !f.to_string_lossy().contains("events")),
        "the event log holds no email in clear: {found:?}"
    );
    assert!(
        !found.is_empty(),
        "the read models' copy of another email is found"
    );

    // Rebuilt from zero (offline, as `backbone rebuild all`), the views are the same.
    let dir = app.stop().await;
    {
        let (store, models) = backbone_tests::bench::open_stores(dir.path()).await;
        projections::rebuild_all(store, models, &all_projections(), 50, |_, _| {})
            .await
            .expect("rebuild");
    }
    let app = spawn_app_in(dir).await;
    assert_eq!(views(&app, &before.orders).await, before.views);
    no_file_holds(&app, &erin);
    she_can_shop_again(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_customer_leaves_no_personal_data_on_dynamodb_with_kms() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let sdk = backbone_tests::aws::moto::sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms
        .create_key()
        .description("backbone data keys")
        .send()
        .await
        .expect("create a KMS key");
    let key_id = key
        .key_metadata()
        .expect("key metadata")
        .key_id()
        .to_owned();
    let (app, stage) = spawn_aws_app_configured(true, |c| {
        c.options.kms_key_id = Some(key_id.clone());
    })
    .await;
    let erin = Person::new();
    let other = Person::new();
    let before = erase_and_check(&app, &erin, &other).await;

    let (found, scanned) = items_containing(&stage, &erin.email).await;
    assert!(found.is_empty(), "erin's email is in {found:?}");
    let (found, _) = items_containing(&stage, &erin.line1).await;
    assert!(found.is_empty(), "erin's address is in {found:?}");
    let (found, _) = items_containing(&stage, &other.email).await;
    assert!(
        !found.is_empty()
            && found
                .iter()
                .all(|i| !i.starts_with(&stage.names.events_table)),
        "another email is found in the read models only: {found:?}"
    );
    assert!(scanned > 50, "the scan read the tables ({scanned} items)");
    // The keys table holds KMS ciphertexts, never a key in clear; erin's item keeps no key.
    let keys = stage
        .dynamodb
        .scan()
        .table_name(&stage.names.keys_table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan keys");
    let items = keys.items();
    assert!(items.len() >= 2, "{items:?}");
    for item in items {
        assert!(!item.contains_key("material"), "{item:?}");
        let customer = item["customer"].as_s().expect("customer");
        if customer == ERIN {
            assert!(item.contains_key("erased_at"), "{item:?}");
            assert!(!item.contains_key("wrapped") && !item.contains_key("key_id"));
        } else {
            assert!(item.contains_key("wrapped"), "{item:?}");
        }
    }

    // Rebuilt from zero (the app's own store and read models; nothing else is written now).
    projections::rebuild_all(
        app.state.store.clone(),
        app.state.models.clone(),
        &all_projections(),
        50,
        |_, _| {},
    )
    .await
    .expect("rebuild");
    assert_eq!(views(&app, &before.orders).await, before.views);
    let (found, _) = items_containing(&stage, &erin.email).await;
    assert!(
        found.is_empty(),
        "after the rebuild erin's email is in {found:?}"
    );
    she_can_shop_again(&app).await;
    app.shutdown().await;
}

/// No SQLite file of the data directory (databases and WALs) holds erin's email or address.
/// Mail already sent is outside: the `file` channel's `outbox/` is the stand-in of a mail server.
fn no_file_holds(app: &TestApp, erin: &Person) {
    for needle in [&erin.email, &erin.line1] {
        let (found, read) = files_containing(app.data_dir.path(), needle);
        let found: Vec<_> = found
            .into_iter()
            .filter(|f| !f.starts_with(app.data_dir.path().join("outbox")))
            .collect();
        assert!(found.is_empty(), "{needle:?} is still in {found:?}");
        assert!(
            read >= 6,
            "the search read the databases and their WALs ({read} files)"
        );
    }
    for file in ["events.sqlite-wal", "readmodels.sqlite-wal"] {
        assert!(
            app.data_dir.path().join(file).exists(),
            "{file} was searched too"
        );
    }
}

/// What the erased views looked like, to compare after a rebuild.
struct Erased {
    orders: Vec<String>,
    views: Vec<Value>,
}

/// The views of `orders` that must not change on a rebuild: the order view (as its customer
/// and as support sees it), without `updated_at` bookkeeping that does not move anyway.
async fn views(app: &TestApp, orders: &[String]) -> Vec<Value> {
    let support = app.token("sam", Role::Support);
    let mut out = Vec::new();
    for order in orders {
        let view = eventually(app.wait, || async {
            let a = app.get(&format!("/v1/orders/{order}"), &support).await;
            (a.status == StatusCode::OK).then_some(a.body)
        })
        .await
        .expect("the order view");
        out.push(view);
        let found = app
            .get(&format!("/v1/support/orders?order_id={order}"), &support)
            .await;
        out.push(found.body["orders"][0].clone());
    }
    out
}

async fn erase_and_check(app: &TestApp, erin: &Person, other: &Person) -> Erased {
    let token = app.token(ERIN, Role::Customer);
    let admin = app.token("ada", Role::Admin);
    let support = app.token("sam", Role::Support);
    let analyst = app.token("ana", Role::Analyst);
    let analyst_pii = app.scoped_token("ana", Role::Analyst, "read pii");

    let first = app
        .place_order_with(&token, &[("prd_espresso", 1)], erin.checkout())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let first_id = first.body["order_id"].as_str().unwrap().to_owned();
    let payment = first.body["payment_id"].as_str().unwrap().to_owned();
    let paid = app.confirm_payment(&token, &payment, "pm_card_visa").await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    let second = app
        .place_order_with(&token, &[("prd_sencha", 2)], erin.checkout())
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let second_id = second.body["order_id"].as_str().unwrap().to_owned();
    let others = app
        .place_order_with(
            &app.token("otto", Role::Customer),
            &[("prd_espresso", 1)],
            other.checkout(),
        )
        .await;
    assert_eq!(others.status, StatusCode::CREATED, "{}", others.text);
    let others_id = others.body["order_id"].as_str().unwrap().to_owned();

    // Before: support finds her by email; the paid order's confirmation exists.
    let by_email = format!("/v1/support/orders?email={}", erin.email.to_uppercase());
    eventually(app.wait, || async {
        let a = app.get(&by_email, &support).await;
        (a.body["orders"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await
    .expect("support finds both orders by email");
    let paid_view = eventually(app.wait, || async {
        let a = app.get(&format!("/v1/orders/{first_id}"), &token).await;
        (a.body["status"] == "paid").then_some(a.body)
    })
    .await
    .expect("the first order is paid");
    assert_eq!(paid_view["customer_email"], erin.email.as_str());

    analysts_see_pseudonyms(app, &analyst, &analyst_pii, erin, &first_id).await;

    // Only admins erase; the answer is replayed for a retried request.
    let path = format!("/v1/admin/customers/{ERIN}/erase");
    for token in [&token, &support, &analyst] {
        let a = app.post(&path, token, json!({})).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    }
    let bad = app
        .post("/v1/admin/customers/no%20way/erase", &admin, json!({}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let erase_once = || {
        app.send(
            reqwest::Method::POST,
            &path,
            Some(&admin),
            Some(json!({})),
            &[("idempotency-key", "erase-erin-1")],
        )
    };
    let erased = erase_once().await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.text);
    assert_eq!(erased.body["customer_id"], ERIN);
    assert_eq!(erased.body["erasure"], 1);
    let retried = erase_once().await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(retried.body["erasure"], 1, "a retry erases nothing more");
    let again = app.post(&path, &admin, json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(
        again.body["erasure"], 2,
        "each erasure is on the audit trail"
    );

    // A message called for after the erasure has nowhere to go: it is cancelled.
    let shipped = app
        .post(
            &format!("/v1/admin/orders/{first_id}/ship"),
            &admin,
            json!({ "tracking": "TRK-ERASED" }),
        )
        .await;
    assert_eq!(shipped.status, StatusCode::OK, "{}", shipped.text);

    // Every read path shows the erased form, and the books still add up.
    for order in [&first_id, &second_id] {
        let view = eventually(app.wait, || async {
            let a = app.get(&format!("/v1/orders/{order}"), &token).await;
            (a.body["customer_email"] == "[erased]").then_some(a.body)
        })
        .await
        .unwrap_or_else(|| panic!("order {order} never showed the erased email"));
        assert!(view["total"]["amount"].is_string(), "{view}");
    }
    let first_view = eventually(app.wait, || async {
        let a = app.get(&format!("/v1/orders/{first_id}"), &token).await;
        (a.body["status"] == "shipped").then_some(a.body)
    })
    .await
    .expect("the shipment reaches the order");
    assert_eq!(first_view["paid"], paid_view["paid"]);
    assert_eq!(first_view["total"], paid_view["total"]);
    let found = eventually(app.wait, || async {
        let a = app.get(&by_email, &support).await;
        (a.body["orders"].as_array().map(Vec::len) == Some(0)).then_some(a.body)
    })
    .await;
    assert!(
        found.is_some(),
        "support search by the old email finds nothing"
    );
    let listed = app
        .get(
            &format!("/v1/support/orders?order_id={second_id}"),
            &support,
        )
        .await;
    assert_eq!(
        listed.body["orders"][0]["email"], "[erased]",
        "{}",
        listed.text
    );
    let timeline = app
        .get(&format!("/v1/support/orders/{first_id}/timeline"), &support)
        .await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.text);
    assert!(!timeline.text.contains(&erin.email) && !timeline.text.contains(&erin.line1));
    let notes = eventually(app.wait, || async {
        let a = app.get("/v1/me/notifications", &token).await;
        let list = a.body["notifications"].as_array()?.clone();
        list.iter()
            .any(|n| n["kind"] == "order_shipped")
            .then_some(list)
    })
    .await
    .expect("the shipment's notification");
    for n in &notes {
        assert_eq!(n["email"], "[erased]", "{n}");
        if n["kind"] == "order_shipped" {
            assert!(n["cancelled_at"].is_string(), "{n}");
            assert_ne!(n["delivery_status"], "delivered", "{n}");
        }
    }
    // Still not sent a while later (the delivery worker polls all the time).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let later = app.get("/v1/me/notifications", &token).await;
    for n in later.body["notifications"].as_array().unwrap() {
        if n["kind"] == "order_shipped" {
            assert_eq!(n["delivery_status"], "pending", "{n}");
            assert_eq!(n["attempts"], 0, "{n}");
        }
    }

    // Time travel and the export, even with the `pii` scope.
    for at in ["", "?at=1"] {
        let state = app
            .get(&format!("/v1/streams/order/{first_id}{at}"), &analyst_pii)
            .await;
        assert_eq!(state.status, StatusCode::OK, "{}", state.text);
        assert_eq!(
            state.body["state"]["customer_email"], "[erased]",
            "{}",
            state.text
        );
        assert_eq!(state.body["state"]["shipping_address"]["line1"], "[erased]");
        assert_eq!(state.body["state"]["customer_id"], ERIN);
        assert!(!state.text.contains(&erin.email) && !state.text.contains(&erin.line1));
    }
    let export = app.get("/v1/events", &analyst_pii).await.text;
    assert!(!export.contains(&erin.email) && !export.contains(&erin.line1));
    let events = parse_ndjson(&export);
    let placed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "OrderPlaced" && e.payload.value()["customer_id"] == ERIN)
        .collect();
    assert_eq!(placed.len(), 2);
    for e in placed {
        assert_eq!(e.payload.value()["customer_email"], "[erased]");
        assert_eq!(e.payload.value()["shipping_address"]["name"], "[erased]");
        assert!(e.payload.value()["total"]["amount"].is_string());
    }
    let trail: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "CustomerErased")
        .collect();
    assert_eq!(trail.len(), 2, "both erasures are on the audit trail");
    assert_eq!(trail[0].stream_id, ERIN);
    assert_eq!(trail[0].payload.value()["requested_by"], "ada");
    assert!(
        export.contains(&other.email),
        "another customer's data is still readable"
    );

    // The other customer is untouched.
    let others_view = app.get(&format!("/v1/orders/{others_id}"), &support).await;
    assert_eq!(others_view.body["customer_email"], other.email.as_str());

    let orders = vec![first_id, second_id];
    Erased {
        views: views(app, &orders).await,
        orders,
    }
}

/// Without the `pii` scope an analyst sees neither emails nor addresses, and customer ids are
/// pseudonyms that stay the same from one export to the next; with it, everything.
async fn analysts_see_pseudonyms(
    app: &TestApp,
    analyst: &str,
    analyst_pii: &str,
    erin: &Person,
    order: &str,
) {
    let masked = app.get("/v1/events", analyst).await.text;
    assert!(!masked.contains(&erin.email) && !masked.contains(&erin.line1));
    assert!(!masked.contains("\"erin\""), "no customer id in clear");
    let events = parse_ndjson(&masked);
    let placed = events
        .iter()
        .find(|e| e.event_type == "OrderPlaced" && e.stream_id == order)
        .expect("the order in the export");
    let pseudonym = placed.payload.value()["customer_id"]
        .as_str()
        .expect("a customer id")
        .to_owned();
    assert!(pseudonym.starts_with("anon_"), "{pseudonym}");
    assert_eq!(placed.payload.value()["customer_email"], "[masked]");
    assert_eq!(
        placed.payload.value()["shipping_address"]["line1"],
        "[masked]"
    );
    // Stable: the same pseudonym in a second export, and on her cart's events too.
    let again = parse_ndjson(&app.get("/v1/events?type=OrderPlaced", analyst).await.text);
    let same = again.iter().find(|e| e.stream_id == order).expect("again");
    assert_eq!(same.payload.value()["customer_id"], pseudonym.as_str());
    assert!(events
        .iter()
        .any(|e| e.event_type == "CartOpened"
            && e.payload.value()["customer_id"] == pseudonym.as_str()));
    // Her actor subject is masked too.
    assert!(events
        .iter()
        .filter(|e| e.metadata.actor.role == "customer")
        .all(|e| e.metadata.actor.subject.starts_with("anon_")));
    let state = app
        .get(&format!("/v1/streams/order/{order}"), analyst)
        .await;
    assert_eq!(state.status, StatusCode::OK, "{}", state.text);
    assert!(!state.text.contains(&erin.email) && !state.text.contains(&erin.line1));
    assert_eq!(state.body["state"]["customer_id"], pseudonym.as_str());
    assert_eq!(state.body["state"]["customer_email"], "[masked]");

    // With the scope: the data in clear.
    let clear = app.get("/v1/events", analyst_pii).await.text;
    assert!(clear.contains(&erin.email) && clear.contains(&erin.line1));
    let state = app
        .get(&format!("/v1/streams/order/{order}"), analyst_pii)
        .await;
    assert_eq!(state.body["state"]["customer_email"], erin.email.as_str());
}

/// After an erasure the customer may order again: the new order is sealed under a new key and
/// reads in clear.
async fn she_can_shop_again(app: &TestApp) {
    let token = app.token(ERIN, Role::Customer);
    let fresh = Person::new();
    let placed = app
        .place_order_with(&token, &[("prd_espresso", 1)], fresh.checkout())
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let order = placed.body["order_id"].as_str().unwrap().to_owned();
    let view = eventually(app.wait, || async {
        let a = app.get(&format!("/v1/orders/{order}"), &token).await;
        (a.status == StatusCode::OK).then_some(a.body)
    })
    .await
    .expect("the new order");
    assert_eq!(view["customer_email"], fresh.email.as_str());
}
