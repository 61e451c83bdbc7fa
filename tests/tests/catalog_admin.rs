//! A complete catalog on both backends. Admins rename, describe and recategorise products,
//! adjust stock up or down with a reason (a write-down never goes below what is reserved), and
//! retire and un-retire them. `GET /v1/catalog/categories` counts the products on sale. Catalog
//! reads are public unless `--catalog-auth required`.

use api::auth::Role;
use backbone_tests::{spawn_app_configured, test_on_both_backends, Answer, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn anonymous(app: &TestApp, path: &str) -> Answer {
    app.send(Method::GET, path, None, None, &[]).await
}

/// The categories as `{category: products}`, read after the write behind `token`.
async fn categories(app: &TestApp, token: &str) -> Value {
    let a = anonymous(app, &format!("/v1/catalog/categories?consistency={token}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| ["kettles", "mugs"].contains(&c["category"].as_str().unwrap()))
        .map(|c| {
            (
                c["category"].as_str().unwrap().to_owned(),
                c["products"].clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn product(app: &TestApp, id: &str, token: &str) -> Value {
    let a = anonymous(
        app,
        &format!("/v1/catalog/products/{id}?consistency={token}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.body
}

async fn admin_edits_the_catalog(app: &TestApp) {
    let admin = app.token("ada", Role::Admin);
    let alice = app.token("alice", Role::Customer);

    // Public reads: no token needed.
    for path in ["/v1/catalog/products", "/v1/catalog/categories"] {
        let a = anonymous(app, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
    }

    for id in ["prd_k1", "prd_k2"] {
        let kettle = json!({ "product_id": id, "name": "Kettle", "category": "kettles",
                "price": { "amount": "20.00", "currency": "EUR" }, "initial_stock": 5 });
        app.create_product_from(&admin, kettle).await;
    }
    let last = app
        .post(
            "/v1/admin/products/prd_k2/restock",
            &admin,
            json!({ "quantity": 1 }),
        )
        .await;
    assert_eq!(
        categories(app, last.consistency()).await,
        json!({ "kettles": 2 })
    );

    // Rename, describe and move one to another category.
    let described = app
        .send(
            Method::PATCH,
            "/v1/admin/products/prd_k1",
            Some(&admin),
            Some(
                json!({ "name": " Copper kettle ", "description": "Hammered copper, 1.2 l.",
                         "category": "mugs" }),
            ),
            &[],
        )
        .await;
    assert_eq!(described.status, StatusCode::OK, "{}", described.text);
    let k1 = product(app, "prd_k1", described.consistency()).await;
    assert_eq!(
        (&k1["name"], &k1["description"], &k1["category"]),
        (
            &json!("Copper kettle"),
            &json!("Hammered copper, 1.2 l."),
            &json!("mugs")
        )
    );
    assert_eq!(
        categories(app, described.consistency()).await,
        json!({ "kettles": 1, "mugs": 1 })
    );
    let listed = anonymous(app, "/v1/catalog/products?category=mugs").await;
    assert_eq!(listed.body["products"][0]["product_id"], "prd_k1");
    for (body, field) in [
        (json!({}), "body"),
        (json!({ "name": "  " }), "name"),
        (json!({ "category": "" }), "category"),
        (json!({ "description": "x".repeat(2_001) }), "description"),
    ] {
        let a = app
            .send(
                Method::PATCH,
                "/v1/admin/products/prd_k1",
                Some(&admin),
                Some(body),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{field}: {}", a.text);
        assert_eq!(a.field(), field, "{}", a.text);
    }
    let forbidden = app
        .send(
            Method::PATCH,
            "/v1/admin/products/prd_k1",
            Some(&alice),
            Some(json!({ "name": "Mine" })),
            &[],
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    // Stock adjustments: a write-down stops at what is reserved.
    let placed = app.place_order(&alice, &[("prd_k2", 4)]).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let adjust = |delta: i64, reason: &str| {
        app.post(
            "/v1/admin/products/prd_k2/stock-adjustments",
            &admin,
            json!({ "delta": delta, "reason": reason }),
        )
    };
    let below = adjust(-3, "breakage").await;
    assert_eq!(below.status, StatusCode::CONFLICT, "{}", below.text);
    assert_eq!(below.code(), "below_reserved");
    let down = adjust(-2, "stock count").await;
    assert_eq!(down.status, StatusCode::OK, "{}", down.text);
    let k2 = product(app, "prd_k2", down.consistency()).await;
    assert_eq!(
        (&k2["on_hand"], &k2["reserved"], &k2["available"]),
        (&json!(4), &json!(4), &json!(0))
    );
    let up = adjust(3, "found a pallet").await;
    let k2 = product(app, "prd_k2", up.consistency()).await;
    assert_eq!((&k2["on_hand"], &k2["available"]), (&json!(7), &json!(3)));
    for (delta, reason, field) in [
        (0, "none", "delta"),
        (2_000_000, "many", "delta"),
        (1, " ", "reason"),
    ] {
        let a = adjust(delta, reason).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
        assert_eq!(a.field(), field, "{}", a.text);
    }

    // Retire and un-retire: the category count follows.
    let retired = app.product_action(&admin, "prd_k1", "retire").await;
    assert_eq!(retired.status, StatusCode::OK, "{}", retired.text);
    assert_eq!(
        categories(app, retired.consistency()).await,
        json!({ "kettles": 1 })
    );
    let cart = app.open_cart(&alice).await;
    let refused = app.add_item(&alice, &cart, "prd_k1", 1).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.code(), "product_retired");
    let back = app.product_action(&admin, "prd_k1", "unretire").await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text);
    assert_eq!(back.body["status"], "active");
    assert_eq!(
        categories(app, back.consistency()).await,
        json!({ "kettles": 1, "mugs": 1 })
    );
    let again = app.product_action(&admin, "prd_k1", "unretire").await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "unretiring twice changes nothing"
    );
    let bought = app.place_order(&alice, &[("prd_k1", 1)]).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.text);
}

test_on_both_backends!(
    admin_edits_the_catalog,
    embedded: admins_keep_a_complete_catalog_that_anyone_can_read_embedded,
    on_dynamodb: admins_keep_a_complete_catalog_that_anyone_can_read_on_dynamodb,
    workers: true
);

#[tokio::test(flavor = "multi_thread")]
async fn catalog_auth_required_puts_the_catalog_behind_a_token() {
    let app = spawn_app_configured(tempfile::tempdir().unwrap(), |c| {
        c.api.catalog_auth_required = true
    })
    .await;
    for path in [
        "/v1/catalog/products",
        "/v1/catalog/products/prd_espresso",
        "/v1/catalog/categories",
    ] {
        let a = anonymous(&app, path).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}: {}", a.text);
        let a = app.get(path, &app.token("alice", Role::Customer)).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
    }
    app.shutdown().await;
}
