//! Every list pages with `?limit=&cursor=` and answers `next_cursor`, on both backends. The
//! order stays stable while new rows arrive between pages: every row listed when paging began
//! shows up exactly once, in order, and the pages never repeat a row.

use api::auth::Role;
use backbone_tests::aws::spawn_aws_app;
use backbone_tests::{eventually, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// Pages through `path` (which already has a `?`) `limit` at a time, the first read waiting
/// for the write behind `first`, calling `between` after each page (it may insert rows and
/// returns a consistency token the next read waits for). Returns the ids under `id` of each
/// item of `list`, in the order listed.
#[allow(clippy::too_many_arguments)]
async fn walk<F, Fut>(
    app: &TestApp,
    token: &str,
    path: &str,
    first: &str,
    list: &str,
    id: &str,
    limit: usize,
    mut between: F,
) -> Vec<String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut consistency = first.to_owned();
    for page in 0.. {
        assert!(page < 50, "{path} never ended");
        let mut url = format!("{path}&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        if !consistency.is_empty() {
            url.push_str(&format!("&consistency={consistency}"));
        }
        let a = app.get(&url, token).await;
        assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.text);
        let items = a.body[list].as_array().unwrap();
        assert!(items.len() <= limit);
        ids.extend(items.iter().map(|i| i[id].as_str().unwrap().to_owned()));
        match a.body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "only full pages say more follow");
                cursor = Some(next.to_owned());
            }
            None => return ids,
        }
        consistency = between(page).await;
    }
    unreachable!()
}

fn no_repeats(ids: &[String]) {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        assert!(seen.insert(id), "{id} listed twice in {ids:?}");
    }
}

async fn every_list_pages_stably_under_inserts(app: &TestApp) {
    let admin = app.token("ada", Role::Admin);
    let alice = app.token("alice", Role::Customer);
    let support = app.token("sam", Role::Support);

    // The catalog, by name: a product inserted before the cursor stays out, one after it
    // shows up later.
    // Tokens join with `~` into one that waits for every write.
    let mut created = Vec::new();
    for name in ["b", "c", "d", "e", "f", "g", "h"] {
        let a = app
            .post(
                "/v1/admin/products",
                &admin,
                json!({ "product_id": format!("prd_pg_{name}"), "name": format!("Page {name}"),
                        "category": "paging", "price": { "amount": "1.00", "currency": "EUR" },
                        "initial_stock": 100 }),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        created.push(a.consistency().to_owned());
    }
    let created = created.join("~");
    let first = app
        .get(
            &format!("/v1/catalog/products?category=paging&consistency={created}"),
            &alice,
        )
        .await;
    assert_eq!(first.body["products"].as_array().unwrap().len(), 7);
    let products = walk(
        app,
        &alice,
        "/v1/catalog/products?category=paging",
        &created,
        "products",
        "product_id",
        3,
        |page| {
            let admin = admin.clone();
            async move {
                if page > 0 {
                    return String::new();
                }
                let mut token = String::new();
                for name in ["a", "z"] {
                    let a = app
                        .post(
                            "/v1/admin/products",
                            &admin,
                            json!({ "product_id": format!("prd_pg_{name}"),
                                    "name": format!("Page {name}"), "category": "paging",
                                    "price": { "amount": "1.00", "currency": "EUR" } }),
                        )
                        .await;
                    token = a.consistency().to_owned();
                }
                token
            }
        },
    )
    .await;
    no_repeats(&products);
    let expected: Vec<String> = ["b", "c", "d", "e", "f", "g", "h", "z"]
        .iter()
        .map(|n| format!("prd_pg_{n}"))
        .collect();
    assert_eq!(products, expected, "by name; a arrived before the cursor");

    // Orders, newest first: one placed while paging is newer than every page.
    let mut placed = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let a = app.place_order(&alice, &[("prd_pg_b", 1)]).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        placed.push(a.body["order_id"].as_str().unwrap().to_owned());
        tokens.push(a.consistency().to_owned());
    }
    let last = tokens.join("~");
    let orders = walk(
        app,
        &alice,
        "/v1/orders?",
        &last,
        "orders",
        "order_id",
        2,
        |_| async {
            let a = app.place_order(&alice, &[("prd_pg_c", 1)]).await;
            a.consistency().to_owned()
        },
    )
    .await;
    no_repeats(&orders);
    let mut newest_first = placed.clone();
    newest_first.reverse();
    assert_eq!(
        orders, newest_first,
        "newest first, nothing newer slipped in"
    );

    // Support search by email, newest first, the same way.
    let found = walk(
        app,
        &support,
        "/v1/support/orders?email=alice@example.com",
        &last,
        "orders",
        "order_id",
        2,
        |_| async {
            let a = app.place_order(&alice, &[("prd_pg_d", 1)]).await;
            a.consistency().to_owned()
        },
    )
    .await;
    no_repeats(&found);
    let listed_before: Vec<&String> = found.iter().filter(|id| placed.contains(id)).collect();
    assert_eq!(
        listed_before,
        newest_first.iter().collect::<Vec<_>>(),
        "every order placed before paging, once, newest first"
    );

    // Notifications, newest first: cancel the five orders, page while cancelling another.
    let mut cancelled = Vec::new();
    for order_id in &placed {
        let a = app
            .post(
                &format!("/v1/orders/{order_id}/cancel"),
                &alice,
                json!({ "reason": "paging" }),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        cancelled.push(a.consistency().to_owned());
    }
    let cancelled = cancelled.join("~");
    // The notifications consumer may take longer than one read's bound on the emulator.
    eventually(app.wait, || async {
        let a = app.get("/v1/me/notifications?limit=50", &alice).await;
        let listed = a.body["notifications"].as_array()?;
        placed
            .iter()
            .all(|id| listed.iter().any(|n| n["order_id"] == id.as_str()))
            .then_some(())
    })
    .await
    .expect("every cancellation notified");
    let notified = walk(
        app,
        &alice,
        "/v1/me/notifications?",
        &cancelled,
        "notifications",
        "order_id",
        2,
        |page| {
            let alice = alice.clone();
            async move {
                let orders = app.get("/v1/orders?limit=50", &alice).await;
                let open: Vec<String> = orders.body["orders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|o| o["status"] == "awaiting_payment")
                    .map(|o| o["order_id"].as_str().unwrap().to_owned())
                    .collect();
                match open.get(page) {
                    Some(order_id) => app
                        .post(
                            &format!("/v1/orders/{order_id}/cancel"),
                            &alice,
                            json!({ "reason": "paging" }),
                        )
                        .await
                        .consistency()
                        .to_owned(),
                    None => String::new(),
                }
            }
        },
    )
    .await;
    no_repeats(&notified);
    let before: Vec<&String> = notified.iter().filter(|id| placed.contains(id)).collect();
    assert_eq!(before, newest_first.iter().collect::<Vec<_>>());

    // A cursor the API never gave out is refused, naming the parameter.
    for bad in ["zz", "", "c3"] {
        let a = app.get(&format!("/v1/orders?cursor={bad}"), &alice).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
        assert_eq!(a.field(), "cursor");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_list_pages_stably_under_inserts_embedded() {
    let app = spawn_app().await;
    every_list_pages_stably_under_inserts(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_list_pages_stably_under_inserts_on_dynamodb() {
    let (app, _stage) = spawn_aws_app(true).await;
    every_list_pages_stably_under_inserts(&app).await;
    app.shutdown().await;
}
