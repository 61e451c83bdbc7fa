//! Every list pages with `?limit=&cursor=` and answers `next_cursor`, on both backends. The
//! order stays stable while new rows arrive between pages: every row listed when paging began
//! shows up exactly once, in order, and the pages never repeat a row.

use api::auth::Role;
use backbone_tests::{eventually, test_on_both_backends, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// A list to page through: `path` (which already has a `?`), `limit` at a time; each page's
/// items are under `list`, each item's id under `id`.
struct Listing {
    path: &'static str,
    list: &'static str,
    id: &'static str,
    limit: usize,
}

const CATALOG: Listing = Listing {
    path: "/v1/catalog/products?category=paging",
    list: "products",
    id: "product_id",
    limit: 3,
};

/// A list of orders, or of what is keyed by order, two at a time.
const fn by_order(path: &'static str, list: &'static str) -> Listing {
    Listing {
        path,
        list,
        id: "order_id",
        limit: 2,
    }
}

const ORDERS: Listing = by_order("/v1/orders?", "orders");
const SUPPORT_SEARCH: Listing = by_order("/v1/support/orders?email=alice@example.com", "orders");
const NOTIFICATIONS: Listing = by_order("/v1/me/notifications?", "notifications");

/// Pages through `listing`, the first read waiting for the write behind `first`, calling
/// `between` after each page (it may insert rows and returns a consistency token the next read
/// waits for). Returns the ids of the items, in the order listed.
async fn walk<F, Fut>(
    app: &TestApp,
    token: &str,
    listing: &Listing,
    first: &str,
    mut between: F,
) -> Vec<String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let Listing {
        path,
        list,
        id,
        limit,
    } = *listing;
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

/// Places an order of one `product`; returns its consistency token.
async fn place_one(app: &TestApp, token: &str, product: &str) -> String {
    let placed = app.place_order_ok(token, &[(product, 1)]).await;
    placed.answer.consistency().to_owned()
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
        let product = json!({ "product_id": format!("prd_pg_{name}"),
                "name": format!("Page {name}"), "category": "paging",
                "price": { "amount": "1.00", "currency": "EUR" }, "initial_stock": 100 });
        let a = app.create_product_from(&admin, product).await;
        created.push(a.consistency().to_owned());
    }
    let created = created.join("~");
    let first = app
        .get_consistent("/v1/catalog/products?category=paging", &alice, &created)
        .await;
    assert_eq!(first.body["products"].as_array().unwrap().len(), 7);
    let products = walk(app, &alice, &CATALOG, &created, |page| {
        let admin = admin.clone();
        async move {
            if page > 0 {
                return String::new();
            }
            let mut token = String::new();
            for name in ["a", "z"] {
                let product = json!({ "product_id": format!("prd_pg_{name}"),
                        "name": format!("Page {name}"), "category": "paging",
                        "price": { "amount": "1.00", "currency": "EUR" } });
                let a = app.create_product_from(&admin, product).await;
                token = a.consistency().to_owned();
            }
            token
        }
    })
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
        let a = app.place_order_ok(&alice, &[("prd_pg_b", 1)]).await;
        tokens.push(a.answer.consistency().to_owned());
        placed.push(a.order_id);
    }
    let last = tokens.join("~");
    let orders = walk(app, &alice, &ORDERS, &last, |_| {
        place_one(app, &alice, "prd_pg_c")
    })
    .await;
    no_repeats(&orders);
    let mut newest_first = placed.clone();
    newest_first.reverse();
    assert_eq!(
        orders, newest_first,
        "newest first, nothing newer slipped in"
    );

    // Support search by email, newest first, the same way.
    let found = walk(app, &support, &SUPPORT_SEARCH, &last, |_| {
        place_one(app, &alice, "prd_pg_d")
    })
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
        let a = app.cancel_order(&alice, order_id, "paging").await;
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
    let notified = walk(app, &alice, &NOTIFICATIONS, &cancelled, |page| {
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
                    .cancel_order(&alice, order_id, "paging")
                    .await
                    .consistency()
                    .to_owned(),
                None => String::new(),
            }
        }
    })
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

test_on_both_backends!(
    every_list_pages_stably_under_inserts,
    embedded: every_list_pages_stably_under_inserts_embedded,
    on_dynamodb: every_list_pages_stably_under_inserts_on_dynamodb,
    workers: true
);
