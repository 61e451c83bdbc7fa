//! The command service and process managers over the real SQLite store: multi-stream checkout,
//! overselling under concurrency, conflict retries, idempotency, snapshots and every process
//! manager step (including redelivery).

#[path = "support/shop.rs"]
mod shop;

use commands::FeedCursor;
use commands::{
    CachingLoader, Caller, CartView, CheckoutReceipt, CommandContext, CommandError, CommandService,
    EventStore, Executed, IdempotencyKey, Loader, LockingLoader, NewProduct, ProcessManagers,
    ServiceConfig, Shop, StoreLoader, StreamRef, SystemClock,
};
use domain::{
    CustomerId, Money, Order, OrderCommand, OrderStatus, Payment, PaymentCommand, PaymentStatus,
    Product, ProductCommand, ProductId, Quantity, StreamType,
};
use infrastructure::simulated::SimulatedGateway;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions};
use shop::checkout_input;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    shop: Arc<Shop>,
    gateway: Arc<SimulatedGateway>,
    pms: ProcessManagers,
}

/// The loader of `serve`: the state cache and the product locks over the store.
fn decorated(store: &Arc<dyn EventStore>) -> Arc<dyn Loader> {
    let plain: Arc<dyn Loader> = Arc::new(StoreLoader::new(store.clone()));
    let cached: Arc<dyn Loader> = Arc::new(CachingLoader::new(plain, 10_000));
    Arc::new(LockingLoader::new(cached, vec![StreamType::Product]))
}

fn fixture_with(config: ServiceConfig) -> Fixture {
    fixture_over(config, true)
}

/// With `decorated` false, the service loads straight from the store.
fn fixture_over(config: ServiceConfig, decorated_loader: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(dir.path().join("events.sqlite"), SqliteOptions::default()).unwrap(),
    );
    let gateway = Arc::new(SimulatedGateway::new());
    let loader: Arc<dyn Loader> = if decorated_loader {
        decorated(&store)
    } else {
        Arc::new(StoreLoader::new(store.clone()))
    };
    let svc = Arc::new(CommandService::with_loader(
        store.clone(),
        loader,
        Arc::new(SystemClock),
        config,
    ));
    let shop = Arc::new(Shop::new(svc, gateway.clone()));
    let pms = ProcessManagers::new(shop.clone(), gateway.clone());
    Fixture {
        _dir: dir,
        store,
        shop,
        gateway,
        pms,
    }
}

/// A fixture whose service gives up on a version conflict after `max_attempts` tries.
fn fixture_with_attempts(max_attempts: u32) -> Fixture {
    fixture_with(ServiceConfig {
        max_attempts,
        ..ServiceConfig::default()
    })
}

fn fixture() -> Fixture {
    fixture_with(ServiceConfig::default())
}

fn ctx() -> CommandContext {
    shop::context("test")
}

fn eur(s: &str) -> Money {
    Money::parse(s, "EUR").unwrap()
}

async fn product(f: &Fixture, id: &str, price: &str, stock: u32) {
    f.shop
        .create_product(
            &ctx(),
            NewProduct {
                product_id: ProductId::parse(id).unwrap(),
                name: format!("Product {id}"),
                category: "tools".into(),
                price: eur(price),
                initial_stock: stock,
            },
        )
        .await
        .unwrap();
}

async fn add_item(
    shop: &Shop,
    ctx: &CommandContext,
    caller: &Caller,
    cart: &str,
    product: &str,
    quantity: u32,
) -> Result<Executed<CartView>, CommandError> {
    let quantity = Quantity::parse(quantity).unwrap();
    shop.add_item(ctx, caller, cart, product, quantity).await
}

async fn cart_with(f: &Fixture, customer: &str, items: &[(&str, u32)]) -> (Caller, String) {
    let customer = CustomerId::parse(customer).unwrap();
    let caller = Caller::Customer(customer.clone());
    let cart = f.shop.open_cart(&ctx(), &customer).await.unwrap();
    for (pid, qty) in items {
        add_item(&f.shop, &ctx(), &caller, &cart.value.cart_id, pid, *qty)
            .await
            .unwrap();
    }
    (caller, cart.value.cart_id)
}

/// Product p1 at `price` with `stock` units, and alice's cart holding `quantity` of it (an
/// empty cart when `quantity` is 0).
async fn alice_and_p1(f: &Fixture, price: &str, stock: u32, quantity: u32) -> (Caller, String) {
    product(f, "p1", price, stock).await;
    let items: &[(&str, u32)] = if quantity == 0 {
        &[]
    } else {
        &[("p1", quantity)]
    };
    cart_with(f, "alice", items).await
}

/// Runs the process managers over everything in the feed, like the worker does.
async fn drain_process_managers(f: &Fixture, after: &mut FeedCursor) {
    commands::conformance::drain_process_managers(&*f.store, &f.pms, after).await;
}

/// A copy of an aggregate's current state.
async fn state<A: domain::EventSourced>(f: &Fixture, id: &str) -> A {
    A::clone(&f.shop.service().load::<A>(id).await.unwrap().state)
}

async fn product_state(f: &Fixture, id: &str) -> Product {
    state(f, id).await
}

async fn order_state(f: &Fixture, id: &str) -> Order {
    state(f, id).await
}

async fn payment_state(f: &Fixture, id: &str) -> Payment {
    state(f, id).await
}

async fn order_version(f: &Fixture, id: &str) -> u64 {
    f.shop.service().load::<Order>(id).await.unwrap().version
}

/// Checks the cart out with the usual customer email and address.
async fn checkout(
    shop: &Shop,
    caller: &Caller,
    cart: &str,
) -> Result<Executed<CheckoutReceipt>, CommandError> {
    shop.checkout(&ctx(), caller, cart, checkout_input()).await
}

/// Checks every cart out at once, each on its own task; the results come in cart order.
async fn checkout_concurrently(
    carts: impl IntoIterator<Item = (Arc<Shop>, Caller, String)>,
) -> Vec<Result<Executed<CheckoutReceipt>, CommandError>> {
    let tasks: Vec<_> = carts
        .into_iter()
        .map(|(shop, caller, cart)| {
            tokio::spawn(async move { checkout(&shop, &caller, &cart).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// The ids of an order placed with `checkout_and_pay`.
struct PaidCheckout {
    order_id: String,
    payment_id: String,
    intent_id: String,
}

/// Product p1 at 10.00 with 5 in stock, alice's cart with `quantity` of it, and
/// `checkout_and_pay`; the simulated gateway creates the intent at once.
async fn checkout_and_pay_p1(f: &Fixture, quantity: u32) -> (Caller, PaidCheckout) {
    let (caller, cart) = alice_and_p1(f, "10.00", 5, quantity).await;
    let (receipt, intent) = f
        .shop
        .checkout_and_pay(&ctx(), &caller, &cart, checkout_input())
        .await
        .unwrap();
    let intent = intent.expect("the simulated gateway answers at once");
    let placed = PaidCheckout {
        order_id: receipt.value.order_id,
        payment_id: receipt.value.payment_id,
        intent_id: intent.intent_id,
    };
    (caller, placed)
}

/// Records the provider's word that the payment's intent succeeded with `amount`.
async fn record_succeeded(
    f: &Fixture,
    placed: &PaidCheckout,
    amount: &str,
    at: chrono::DateTime<chrono::Utc>,
) {
    f.shop
        .payment_fact(&ctx(), &placed.payment_id, |_| {
            PaymentCommand::RecordSucceeded {
                charge_id: None,
                intent_id: placed.intent_id.clone(),
                amount: eur(amount),
                at,
            }
        })
        .await
        .unwrap();
}

/// The customer pays the 10.00 of a one-item order: the gateway confirms the intent with a
/// card, and the success is recorded.
async fn confirm_and_record_payment(
    f: &Fixture,
    placed: &PaidCheckout,
    at: chrono::DateTime<chrono::Utc>,
) {
    f.gateway
        .confirm(&placed.intent_id, "pm_card_visa")
        .unwrap();
    record_succeeded(f, placed, "10.00", at).await;
}

async fn order_command(f: &Fixture, caller: &Caller, order_id: &str, command: OrderCommand) {
    f.shop
        .order_command(&ctx(), caller, order_id, |_| command.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn checkout_commits_cart_order_stock_and_payment_in_one_commit() {
    let f = fixture();
    product(&f, "p1", "10.00", 5).await;
    product(&f, "p2", "2.50", 5).await;
    let (caller, cart) = cart_with(&f, "alice", &[("p1", 2), ("p2", 1)]).await;
    let head_before = f.store.head().await.unwrap();
    let receipt = checkout(&f.shop, &caller, &cart).await.unwrap();
    assert_eq!(receipt.value.total, eur("22.50"));
    let commit = receipt.commit.clone().unwrap();
    let mut streams: Vec<StreamType> = commit
        .streams
        .iter()
        .map(|s| s.stream.stream_type)
        .collect();
    streams.sort();
    assert_eq!(
        streams,
        vec![
            StreamType::Cart,
            StreamType::Order,
            StreamType::Payment,
            StreamType::Product,
            StreamType::Product
        ]
    );
    let new_events = f.store.feed(&head_before, 100).await.unwrap();
    assert_eq!(
        new_events.len(),
        5,
        "one event per stream, all in one commit"
    );
    let order = order_state(&f, &receipt.value.order_id).await;
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    assert_eq!(order.total, Some(eur("22.50")));
    assert_eq!(product_state(&f, "p1").await.available(), 3);
    // A second checkout of the same cart is refused cleanly.
    let again = checkout(&f.shop, &caller, &cart).await;
    assert!(
        matches!(
            again,
            Err(CommandError::Rejected {
                code: "cart_checked_out",
                ..
            })
        ),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn checkout_uses_the_product_price_not_the_price_seen_in_the_cart() {
    let f = fixture();
    let (caller, cart) = alice_and_p1(&f, "10.00", 5, 1).await;
    f.shop
        .product_command(&ctx(), "p1", |_| ProductCommand::Reprice {
            price: eur("12.00"),
        })
        .await
        .unwrap();
    let receipt = checkout(&f.shop, &caller, &cart).await.unwrap();
    assert_eq!(receipt.value.total, eur("12.00"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_checkouts_of_ten_units_give_ten_orders_and_forty_clean_refusals() {
    let f = Arc::new(fixture_with_attempts(200));
    product(&f, "hot", "5.00", 10).await;
    let mut carts = Vec::new();
    for i in 0..50 {
        carts.push(cart_with(&f, &format!("c{i}"), &[("hot", 1)]).await);
    }
    // Two services over one store, like two API processes: each queues its own checkouts on the
    // hot product, and the two race each other through the store's version check.
    let other = Arc::new(second_shop(&f));
    let shops = [f.shop.clone(), other];
    let checkouts = carts
        .into_iter()
        .enumerate()
        .map(|(i, (caller, cart))| (shops[i % 2].clone(), caller, cart));
    let mut ok = 0;
    let mut insufficient = 0;
    for result in checkout_concurrently(checkouts).await {
        match result {
            Ok(_) => ok += 1,
            Err(CommandError::Rejected {
                code: "insufficient_stock",
                ..
            }) => insufficient += 1,
            Err(other) => panic!("unexpected checkout error: {other:?}"),
        }
    }
    assert_eq!((ok, insufficient), (10, 40));
    let p = product_state(&f, "hot").await;
    assert_eq!((p.on_hand, p.reserved(), p.available()), (10, 10, 0));
    // Stock never went negative along the way: every StockReserved reports available >= 0 and
    // the running reserved count only reaches 10.
    let events = f
        .store
        .read(&StreamRef::new(StreamType::Product, "hot"), 1..=u64::MAX)
        .await
        .unwrap();
    let reserved: Vec<u64> = events
        .iter()
        .filter(|e| e.event_type == "StockReserved")
        .map(|e| e.payload.value()["reserved"].as_u64().unwrap())
        .collect();
    assert_eq!(reserved, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_that_never_resolves_surfaces_as_conflict() {
    // With a single attempt allowed, a stale expected version can't be retried.
    let f = fixture_with_attempts(1);
    let (caller, cart) = alice_and_p1(&f, "1.00", 100, 0).await;
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (f, caller, cart) = (f.clone(), caller.clone(), cart.clone());
        tasks.push(tokio::spawn(async move {
            add_item(&f.shop, &ctx(), &caller, &cart, "p1", 1).await
        }));
    }
    let mut conflicts = 0;
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CommandError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok + conflicts, 16);
    assert!(ok >= 1);
    let view = f.shop.get_cart(&caller, &cart).await.unwrap();
    assert_eq!(
        view.lines[0].quantity as usize, ok,
        "only winners are applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request() {
    let f = fixture();
    let (caller, cart) = alice_and_p1(&f, "1.00", 100, 0).await;
    let keyed = |body: &[u8]| CommandContext {
        idempotency: Some(IdempotencyKey::new("http:alice:add:k1", body)),
        ..ctx()
    };
    let first = add_item(&f.shop, &keyed(b"a"), &caller, &cart, "p1", 2)
        .await
        .unwrap();
    let second = add_item(&f.shop, &keyed(b"a"), &caller, &cart, "p1", 2)
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.value, second.value);
    assert_eq!(
        f.shop.get_cart(&caller, &cart).await.unwrap().lines[0].quantity,
        2
    );
    let other = add_item(&f.shop, &keyed(b"b"), &caller, &cart, "p1", 3).await;
    assert!(
        matches!(other, Err(CommandError::IdempotencyMismatch)),
        "{other:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_cannot_reach_each_others_carts_or_orders() {
    let f = fixture();
    let (alice, cart) = alice_and_p1(&f, "1.00", 100, 1).await;
    let bob = Caller::Customer(CustomerId::parse("bob").unwrap());
    assert!(matches!(
        f.shop.get_cart(&bob, &cart).await,
        Err(CommandError::NotFound { .. })
    ));
    assert!(matches!(
        add_item(&f.shop, &ctx(), &bob, &cart, "p1", 1).await,
        Err(CommandError::NotFound { .. })
    ));
    let order = checkout(&f.shop, &alice, &cart).await.unwrap();
    assert!(matches!(
        f.shop.get_order_state(&bob, &order.value.order_id).await,
        Err(CommandError::NotFound { .. })
    ));
    assert!(f
        .shop
        .get_order_state(&alice, &order.value.order_id)
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_keep_loads_short_and_equal_to_a_full_replay() {
    let f = fixture_with(ServiceConfig {
        snapshot_every: 50,
        ..ServiceConfig::default()
    });
    product(&f, "p1", "1.00", 1).await;
    for _ in 0..120 {
        f.shop
            .product_command(&ctx(), "p1", |_| ProductCommand::Restock { quantity: 1 })
            .await
            .unwrap();
    }
    let stream = StreamRef::new(StreamType::Product, "p1");
    let loaded = f.store.load(&stream).await.unwrap();
    let snap = loaded.snapshot.expect("a snapshot was written");
    assert_eq!(snap.version, 100);
    assert_eq!(loaded.events.len(), 21);
    let via_snapshot = product_state(&f, "p1").await;
    let all = f.store.read(&stream, 1..=u64::MAX).await.unwrap();
    let mut replayed = Product::default();
    for e in &all {
        use domain::Event;
        let ev =
            domain::ProductEvent::decode(&e.event_type, e.event_version, e.payload.json()).unwrap();
        replayed.evolve(&ev);
    }
    assert_eq!(via_snapshot, replayed);
    assert_eq!(via_snapshot.on_hand, 121);
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_success_marks_the_order_paid_once_even_when_redelivered() {
    let f = fixture();
    let (_, placed) = checkout_and_pay_p1(&f, 1).await;
    confirm_and_record_payment(&f, &placed, chrono::Utc::now()).await;
    let mut pos = FeedCursor::start();
    drain_process_managers(&f, &mut pos).await;
    let order = order_state(&f, &placed.order_id).await;
    assert_eq!(order.status, OrderStatus::Paid);
    // Redeliver every event of the feed: nothing changes.
    let version_before = order_version(&f, &placed.order_id).await;
    let mut from_zero = FeedCursor::start();
    drain_process_managers(&f, &mut from_zero).await;
    assert_eq!(version_before, order_version(&f, &placed.order_id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_failure_marks_the_order_and_a_late_failure_after_success_is_ignored() {
    let f = fixture();
    let (_, placed) = checkout_and_pay_p1(&f, 1).await;
    let now = chrono::Utc::now();
    f.shop
        .payment_fact(&ctx(), &placed.payment_id, |_| {
            PaymentCommand::RecordFailed {
                intent_id: placed.intent_id.clone(),
                reason: "card_declined".into(),
                at: now,
            }
        })
        .await
        .unwrap();
    let mut pos = FeedCursor::start();
    drain_process_managers(&f, &mut pos).await;
    assert_eq!(
        order_state(&f, &placed.order_id).await.status,
        OrderStatus::PaymentFailed
    );
    record_succeeded(&f, &placed, "10.00", now).await;
    drain_process_managers(&f, &mut pos).await;
    assert_eq!(
        order_state(&f, &placed.order_id).await.status,
        OrderStatus::Paid
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_an_unpaid_order_releases_its_stock() {
    let f = fixture();
    let (caller, cart) = alice_and_p1(&f, "10.00", 5, 3).await;
    let order_id = checkout(&f.shop, &caller, &cart)
        .await
        .unwrap()
        .value
        .order_id;
    assert_eq!(product_state(&f, "p1").await.available(), 2);
    let cancel = OrderCommand::Cancel {
        reason: "changed my mind".into(),
        at: chrono::Utc::now(),
    };
    order_command(&f, &caller, &order_id, cancel).await;
    let mut pos = FeedCursor::start();
    drain_process_managers(&f, &mut pos).await;
    assert_eq!(product_state(&f, "p1").await.available(), 5);
    // Redelivery releases nothing twice.
    let mut again = FeedCursor::start();
    drain_process_managers(&f, &mut again).await;
    let p = product_state(&f, "p1").await;
    assert_eq!((p.on_hand, p.reserved()), (5, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_paid_order_refunds_it_and_the_order_ends_refunded() {
    let f = fixture();
    let (caller, placed) = checkout_and_pay_p1(&f, 1).await;
    let at = chrono::Utc::now();
    confirm_and_record_payment(&f, &placed, at).await;
    let mut pos = FeedCursor::start();
    drain_process_managers(&f, &mut pos).await;
    let cancel = OrderCommand::Cancel {
        reason: "too slow".into(),
        at,
    };
    order_command(&f, &caller, &placed.order_id, cancel).await;
    drain_process_managers(&f, &mut pos).await;
    let payment = payment_state(&f, &placed.payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(payment.refunded, Some(eur("10.00")));
    let order = order_state(&f, &placed.order_id).await;
    assert_eq!(order.refunded, Some(eur("10.00")));
    assert_eq!(product_state(&f, "p1").await.available(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn shipping_commits_the_reserved_stock() {
    let f = fixture();
    let (_, placed) = checkout_and_pay_p1(&f, 2).await;
    let at = chrono::Utc::now();
    record_succeeded(&f, &placed, "20.00", at).await;
    let mut pos = FeedCursor::start();
    drain_process_managers(&f, &mut pos).await;
    let ship = OrderCommand::Ship {
        tracking: Some("TRACK1".into()),
        at,
    };
    order_command(&f, &Caller::Staff, &placed.order_id, ship).await;
    drain_process_managers(&f, &mut pos).await;
    let p = product_state(&f, "p1").await;
    assert_eq!((p.on_hand, p.reserved(), p.available()), (3, 0, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_that_lands_as_the_order_expires_is_refunded() {
    let f = fixture();
    let (_, placed) = checkout_and_pay_p1(&f, 1).await;
    let at = chrono::Utc::now();
    let expire = OrderCommand::Expire {
        at,
        unpaid_for: chrono::Duration::zero(),
    };
    order_command(&f, &Caller::Staff, &placed.order_id, expire).await;
    // The race: the customer's payment succeeds at the provider just as the order expires, so
    // the process managers' cancellation of the intent is refused and the money arrives late.
    f.gateway
        .confirm(&placed.intent_id, "pm_card_visa")
        .unwrap();
    let mut pos = FeedCursor::start();
    drain_process_managers(&f, &mut pos).await;
    assert_eq!(
        product_state(&f, "p1").await.available(),
        5,
        "expiry released the stock"
    );
    assert_eq!(
        f.gateway.intent_status(&placed.intent_id).as_deref(),
        Some("succeeded")
    );
    record_succeeded(&f, &placed, "10.00", at).await;
    drain_process_managers(&f, &mut pos).await;
    let payment = payment_state(&f, &placed.payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(
        order_state(&f, &placed.order_id).await.status,
        OrderStatus::Expired
    );
}

/// A second service over the same store, with its own state cache: what one writes, the other's
/// cache does not know.
fn second_shop(f: &Fixture) -> Shop {
    let svc = Arc::new(CommandService::with_loader(
        f.store.clone(),
        decorated(&f.store),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    Shop::new(svc, f.gateway.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_state_cache_never_decides_wrong() {
    let f = fixture();
    let other = second_shop(&f);
    product(&f, "p1", "1.00", 100).await;
    product(&f, "p2", "2.00", 100).await;
    // The first service caches the cart with p1 in it (version 2).
    let (caller, cart) = cart_with(&f, "alice", &[("p1", 1)]).await;

    // Behind its back, the other service removes p1 (version 3).
    other
        .remove_item(&ctx(), &caller, &cart, "p1")
        .await
        .unwrap();
    // Deciding on the cached version 2 conflicts; the retry decides on version 3: p1 is new.
    let added = add_item(&f.shop, &ctx(), &caller, &cart, "p1", 2)
        .await
        .unwrap();
    assert_eq!(added.value.version, 4);
    assert_eq!(added.value.lines.len(), 1);
    assert_eq!(added.value.lines[0].quantity, 2);

    // The other service adds p2 (version 5). On the first service's cached version 4 the cart
    // has no p2, so removing it is refused there; the refusal is re-checked on fresh state,
    // where the removal is valid.
    add_item(&other, &ctx(), &caller, &cart, "p2", 1)
        .await
        .unwrap();
    let removed = f
        .shop
        .remove_item(&ctx(), &caller, &cart, "p2")
        .await
        .unwrap();
    assert_eq!(removed.value.version, 6);
    assert_eq!(removed.value.lines.len(), 1);

    // A genuine refusal is still a refusal after the re-check.
    let err = f
        .shop
        .remove_item(&ctx(), &caller, &cart, "p2")
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Rejected { .. }), "{err:?}");
    let view = other.get_cart(&caller, &cart).await.unwrap();
    assert_eq!(view.version, 6);
    assert_eq!(view.lines[0].product_id.as_str(), "p1");
}

/// Commands that are done with their loaded state change it in place when nothing else holds
/// it (the cache lets go of it first). Concurrent commands on one cart share the cached state,
/// so each of them must still decide on an untouched copy: every add lands exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_adds_to_one_cart_are_retried_and_all_land_exactly_once() {
    // Eight tasks of five adds each race on one cart; conflicts are retried.
    let f = Arc::new(fixture_with(ServiceConfig {
        max_attempts: 200,
        retry_base: std::time::Duration::from_micros(100),
        ..ServiceConfig::default()
    }));
    for p in 0..8 {
        product(&f, &format!("p{p}"), "1.50", 1_000).await;
    }
    let (caller, cart) = cart_with(&f, "alice", &[]).await;
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let (f, caller, cart) = (f.clone(), caller.clone(), cart.clone());
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in (t * 5)..(t * 5 + 5) {
                let pid = format!("p{}", i % 8);
                let added = add_item(&f.shop, &ctx(), &caller, &cart, &pid, i % 3 + 1)
                    .await
                    .unwrap();
                // The answer is the state this command committed: its own line is in it.
                let line = added
                    .value
                    .lines
                    .iter()
                    .find(|l| l.product_id.as_str() == pid)
                    .expect("own line");
                assert!(line.quantity > i % 3);
                versions.push(added.value.version);
            }
            versions
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.extend(t.await.unwrap());
    }
    versions.sort_unstable();
    // Opened at version 1, then 40 adds: each got its own version.
    assert_eq!(versions, (2..=41).collect::<Vec<u64>>());
    // The cached state and the stored one agree: the next command decides on version 41.
    let view = f.shop.get_cart(&caller, &cart).await.unwrap();
    assert_eq!(view.version, 41);
    let mut expected = [0u32; 8];
    for i in 0..40u32 {
        expected[(i % 8) as usize] += i % 3 + 1;
    }
    for line in &view.lines {
        let p: usize = line.product_id.as_str()[1..].parse().unwrap();
        assert_eq!(line.quantity, expected[p], "{}", line.product_id);
    }
    let next = add_item(&f.shop, &ctx(), &caller, &cart, "p0", 1)
        .await
        .unwrap();
    assert_eq!(next.value.version, 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_cache_is_not_needed_for_correct_answers() {
    // The same flow with the cache off gives the same versions and lines.
    let f = fixture_over(ServiceConfig::default(), false);
    let (caller, cart) = alice_and_p1(&f, "1.00", 100, 1).await;
    let q = Quantity::parse(3).unwrap();
    let changed = f
        .shop
        .change_quantity(&ctx(), &caller, &cart, "p1", q)
        .await
        .unwrap();
    assert_eq!(changed.value.version, 3);
    assert_eq!(changed.value.lines[0].quantity, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_checkouts_of_hot_products_queue_instead_of_conflicting() {
    // One attempt only: a single version conflict would fail a checkout.
    let f = Arc::new(fixture_with_attempts(1));
    product(&f, "hot1", "5.00", 1_000).await;
    product(&f, "hot2", "7.00", 1_000).await;
    let mut carts = Vec::new();
    for i in 0..32 {
        let items: &[(&str, u32)] = match i % 3 {
            0 => &[("hot1", 1), ("hot2", 1)],
            1 => &[("hot2", 2), ("hot1", 1)],
            _ => &[("hot1", 3)],
        };
        carts.push(cart_with(&f, &format!("c{i}"), items).await);
    }
    let checkouts = carts
        .into_iter()
        .map(|(caller, cart)| (f.shop.clone(), caller, cart));
    for result in checkout_concurrently(checkouts).await {
        result.expect("every checkout goes through on its first attempt");
    }
    // 11 carts of kind 0, 11 of kind 1, 10 of kind 2.
    let (h1, h2) = (
        product_state(&f, "hot1").await,
        product_state(&f, "hot2").await,
    );
    assert_eq!(h1.reserved(), 11 + 11 + 30);
    assert_eq!(h2.reserved(), 11 + 22);
}
