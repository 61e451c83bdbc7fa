//! Checkout races on both backends: fifty customers check out the last ten units of a product at
//! once. Exactly ten orders are placed; the forty others get a clean 409, and the product's
//! stream holds exactly ten reservations.

use api::auth::Role;
use backbone_tests::{test_on_both_backends, TestApp};
use commands::StreamRef;
use domain::StreamType;
use std::collections::BTreeMap;

const UNITS: u32 = 10;
const CUSTOMERS: usize = 50;

async fn race(app: &TestApp) {
    let admin = app.token("ada", Role::Admin);
    app.create_product(&admin, "prd_race", "9.90", UNITS).await;

    let checkouts = (0..CUSTOMERS).map(|i| async move {
        let token = app.token(&format!("racer{i}"), Role::Customer);
        app.place_order(&token, &[("prd_race", 1)]).await
    });
    let answers = futures::future::join_all(checkouts).await;
    let mut outcomes: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for a in &answers {
        let code = a.body["error"]["code"].as_str().unwrap_or("").to_owned();
        *outcomes.entry((a.status.as_u16(), code)).or_default() += 1;
    }
    let expected = BTreeMap::from([
        ((201, String::new()), UNITS as usize),
        (
            (409, "insufficient_stock".to_owned()),
            CUSTOMERS - UNITS as usize,
        ),
    ]);
    assert_eq!(outcomes, expected, "ten orders, forty clean refusals");

    let history = app
        .state
        .store
        .read(
            &StreamRef::new(StreamType::Product, "prd_race"),
            1..=u64::MAX,
        )
        .await
        .unwrap();
    let reserved = history
        .iter()
        .filter(|e| e.event_type == "StockReserved")
        .count();
    assert_eq!(reserved, UNITS as usize, "one reservation per order");
}

test_on_both_backends!(
    race,
    embedded: fifty_checkouts_of_ten_units_place_ten_orders_on_the_embedded_store,
    on_dynamodb: fifty_checkouts_of_ten_units_place_ten_orders_on_dynamodb,
    workers: false
);
