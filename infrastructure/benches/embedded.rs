//! Embedded-store benchmark: `cargo bench -p infrastructure --bench embedded`.
//!
//! Prints a Markdown table. Options (after `--`): `--events N` (feed/rebuild size, default
//! 1,000,000), `--quick` (small sizes, for a smoke run), `--only sealing` (just the checkout
//! throughput with personal data sealed against in clear), `--only loads` (the load + fold of a
//! long stream, with and without snapshots), `--only history` (the raw SQLite references, the
//! bulk load, the decoded feed scan and the rebuild of all projections).
//!
//! Everything runs on a temporary directory of the current file system with the default
//! durability (`synchronous=FULL`) unless a row says otherwise.

// The same allocator as the `backbone` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use commands::FeedCursor;
use commands::{
    CachingLoader, Caller, CheckoutInput, CommandContext, CommandService, Commit, EventStore,
    Loader, LockingLoader, Metadata, NewEvent, NewProduct, ServiceConfig, Shop, StoreLoader,
    StreamAppend, StreamRef, SystemClock,
};
use domain::{
    Cart, CartCommand, CartId, CustomerId, Event, Money, Order, OrderCommand, OrderId, OrderLine,
    Payment, PaymentCommand, PaymentId, Product, ProductCommand, ProductId, Quantity,
    ShippingAddress, StreamType,
};
use infrastructure::simulated::SimulatedGateway;
use infrastructure::sqlite::SqliteReadModelStore;
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions, Synchronous};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    events: u64,
    quick: bool,
    /// `--only sealing` or `--only history`: one part of the bench.
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        events: 1_000_000,
        quick: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => a.events = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.events),
            "--quick" => a.quick = true,
            "--only" => a.only = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    if a.quick {
        a.events = a.events.min(50_000);
    }
    a
}

fn row(what: &str, value: String, note: &str) {
    println!("| {what} | {value} | {note} |");
}

fn per_sec(n: u64, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Spawns one task per job and waits for them all; each task returns the latencies it timed.
/// Returns the wall time of the whole run and every latency, sorted.
async fn concurrently<J, F, Fut>(
    jobs: impl IntoIterator<Item = J>,
    task: F,
) -> (Duration, Vec<Duration>)
where
    F: Fn(J) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| tokio::spawn(task(job)))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("join"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    (elapsed, lat)
}

fn meta() -> Metadata {
    Metadata {
        correlation_id: "bench".into(),
        ..Metadata::default()
    }
}

fn new_event<E: Event>(e: &E) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: e.event_type().to_string(),
        event_version: e.event_version(),
        occurred_at: chrono::Utc::now(),
        payload: commands::Payload::of_event(e),
        metadata: meta(),
    }
}

fn open(dir: &Path, name: &str, sync: Synchronous) -> Arc<SqliteEventStore> {
    Arc::new(
        SqliteEventStore::open(
            dir.join(name),
            SqliteOptions {
                synchronous: sync,
                ..SqliteOptions::default()
            },
        )
        .expect("open store"),
    )
}

// ----- raw rusqlite baselines --------------------------------------------------------------

fn raw_baselines(dir: &Path, quick: bool) {
    let payload = r#"{"order_id":"ord_0193","amount":{"amount":"10.00","currency":"EUR"}}"#;
    for (label, sync, n) in [
        (
            "raw rusqlite, one commit per insert, FULL",
            "FULL",
            if quick { 300 } else { 3_000 },
        ),
        (
            "raw rusqlite, one commit per insert, NORMAL",
            "NORMAL",
            if quick { 2_000 } else { 30_000 },
        ),
    ] {
        let path = dir.join(format!("raw-{sync}.sqlite"));
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};
             CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, seq INTEGER, payload TEXT, UNIQUE(s, seq));"
        ))
        .expect("schema");
        let start = Instant::now();
        for i in 0..n {
            c.execute(
                "INSERT INTO t(s, seq, payload) VALUES ('s', ?1, ?2)",
                rusqlite::params![i, payload],
            )
            .expect("insert");
        }
        row(
            label,
            per_sec(n as u64, start.elapsed()),
            "physical reference",
        );
    }
    let path = dir.join("raw-tx.sqlite");
    let mut c = rusqlite::Connection::open(&path).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, seq INTEGER, payload TEXT, UNIQUE(s, seq));",
    )
    .expect("schema");
    let n: u64 = if quick { 50_000 } else { 500_000 };
    let start = Instant::now();
    let tx = c.transaction().expect("tx");
    {
        let mut st = tx
            .prepare("INSERT INTO t(s, seq, payload) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for i in 0..n {
            st.execute(rusqlite::params![format!("s{}", i % 1000), i, payload])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    row(
        "raw rusqlite, all rows in one transaction",
        per_sec(n, start.elapsed()),
        "physical reference",
    );
    let start = Instant::now();
    let mut st = c
        .prepare("SELECT id, s, seq, payload FROM t ORDER BY id")
        .expect("prepare");
    let mut count = 0u64;
    let mut rows = st.query([]).expect("query");
    while let Some(r) = rows.next().expect("row") {
        let _id: i64 = r.get(0).expect("id");
        let _s: String = r.get(1).expect("s");
        let _seq: i64 = r.get(2).expect("seq");
        let p: String = r.get(3).expect("payload");
        let v: serde_json::Value = serde_json::from_str(&p).expect("json");
        count += u64::from(v.is_object());
    }
    row(
        "raw rusqlite, decoded sequential scan",
        per_sec(count, start.elapsed()),
        "physical reference (JSON payload decoded)",
    );
}

// ----- store appends ---------------------------------------------------------------------------

async fn appends(dir: &Path, quick: bool) {
    for writers in [1usize, 4, 16] {
        let store = open(dir, &format!("appends-{writers}.sqlite"), Synchronous::Full);
        let per_writer: u64 = if quick {
            300
        } else if writers == 1 {
            5_000
        } else {
            40_000 / writers as u64
        };
        let (elapsed, lat) = concurrently(0..writers, |w| {
            let store = store.clone();
            async move {
                let mut lat = Vec::with_capacity(per_writer as usize);
                let stream = StreamRef::new(domain::StreamType::Product, format!("bench-{w}"));
                let ev = domain::ProductEvent::ProductRestocked {
                    product_id: ProductId::parse("p").expect("id"),
                    quantity: 1,
                    on_hand: 1,
                    available: 1,
                };
                for v in 0..per_writer {
                    let t = Instant::now();
                    store
                        .append(Commit {
                            streams: vec![StreamAppend {
                                stream: stream.clone(),
                                expected_version: v,
                                events: vec![new_event(&ev)],
                                snapshot: None,
                            }],
                            idempotency: None,
                        })
                        .await
                        .expect("append");
                    lat.push(t.elapsed());
                }
                lat
            }
        })
        .await;
        row(
            &format!("appends, single-event commits, {writers} writer(s), FULL"),
            per_sec(lat.len() as u64, elapsed),
            &format!("p50 {} / p99 {}", ms(pct(&lat, 0.5)), ms(pct(&lat, 0.99))),
        );
    }
}

// ----- checkout ------------------------------------------------------------------------------

fn eur(s: &str) -> Money {
    Money::parse(s, "EUR").expect("money")
}

fn address() -> ShippingAddress {
    ShippingAddress {
        name: "Bench".into(),
        line1: "1 Road".into(),
        line2: None,
        city: "Town".into(),
        postal_code: "12345".into(),
        country: "DE".into(),
    }
}

/// What one checkout run measured.
struct CheckoutRun {
    /// Wall time of the `n` checkouts, 16 at a time.
    elapsed: Duration,
    /// Each checkout's latency, sorted.
    latencies: Vec<Duration>,
    /// Time spent opening the `n` carts, one at a time (each a new customer's first event).
    opening: Duration,
}

/// Checks out `n` two-line carts of `n` new customers, 16 at a time, through the shop as
/// `serve` composes it over `store`.
async fn checkout_run(store: Arc<dyn EventStore>, n: usize) -> CheckoutRun {
    let gateway = Arc::new(SimulatedGateway::new());
    // The loader of `serve` (api/src/compose.rs): the state cache and the product locks.
    let plain: Arc<dyn Loader> = Arc::new(StoreLoader::new(store.clone()));
    let cached: Arc<dyn Loader> = Arc::new(CachingLoader::new(plain, 10_000));
    let loader: Arc<dyn Loader> = Arc::new(LockingLoader::new(
        cached,
        vec![domain::StreamType::Product],
    ));
    let svc = Arc::new(CommandService::with_loader(
        store,
        loader,
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    let shop = Arc::new(Shop::new(svc, gateway));
    let ctx = CommandContext {
        metadata: meta(),
        idempotency: None,
    };
    let products = 200;
    for p in 0..products {
        shop.create_product(
            &ctx,
            NewProduct {
                product_id: ProductId::parse(&format!("p{p}")).expect("id"),
                name: format!("Product {p}"),
                category: "bench".into(),
                price: eur("9.99"),
                initial_stock: 1_000_000,
            },
        )
        .await
        .expect("product");
    }
    let mut carts = Vec::with_capacity(n);
    let mut opening = Duration::ZERO;
    for i in 0..n {
        let customer = CustomerId::parse(&format!("c{i}")).expect("id");
        let caller = Caller::Customer(customer.clone());
        let opened = Instant::now();
        let cart = shop
            .open_cart(&ctx, &customer)
            .await
            .expect("cart")
            .value
            .cart_id;
        opening += opened.elapsed();
        for k in 0..2 {
            let pid = format!("p{}", (i * 7 + k * 13) % products);
            shop.add_item(&ctx, &caller, &cart, &pid, Quantity::parse(1).expect("qty"))
                .await
                .expect("add");
        }
        carts.push((caller, cart));
    }
    let concurrency = 16;
    let chunks: Vec<Vec<(Caller, String)>> = carts
        .chunks(n.div_ceil(concurrency))
        .map(|c| c.to_vec())
        .collect();
    let (elapsed, lat) = concurrently(chunks, |chunk| {
        let shop = shop.clone();
        let ctx = ctx.clone();
        async move {
            let mut lat = Vec::new();
            for (i, (caller, cart)) in chunk.into_iter().enumerate() {
                let t = Instant::now();
                shop.checkout(
                    &ctx,
                    &caller,
                    &cart,
                    CheckoutInput {
                        customer_email: format!("customer{i}@example.com"),
                        shipping_address: address(),
                    },
                )
                .await
                .expect("checkout");
                lat.push(t.elapsed());
            }
            lat
        }
    })
    .await;
    CheckoutRun {
        elapsed,
        latencies: lat,
        opening,
    }
}

async fn checkouts(dir: &Path, quick: bool) {
    let store = open(dir, "checkout.sqlite", Synchronous::Full);
    let n: usize = if quick { 200 } else { 4_000 };
    let CheckoutRun {
        elapsed,
        latencies: lat,
        ..
    } = checkout_run(store, n).await;
    row(
        "checkout commits (2 lines: 5 streams, 1 commit), 16 concurrent",
        per_sec(n as u64, elapsed),
        &format!(
            "p50 {} / p99 {}; the 5 stream states mostly come from the state cache",
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99))
        ),
    );
}

/// The event store as `serve` opens it: personal data sealed with each new customer's own key
/// (a key table in the same file, cached), or not.
fn checkout_store(dir: &Path, name: &str, sealed: bool) -> Arc<dyn EventStore> {
    let path = dir.join(name);
    let store = SqliteEventStore::open(&path, SqliteOptions::default()).expect("open store");
    if !sealed {
        return Arc::new(store);
    }
    let keys: Arc<dyn commands::KeyStore> = Arc::new(commands::CachedKeyStore::new(
        infrastructure::sqlite::SqliteKeyStore::open(&path).expect("key store"),
        100_000,
        None,
    ));
    Arc::new(commands::PersonalDataStore::new(
        store,
        commands::Pii::new(keys),
    ))
}

/// Checkout throughput with personal data sealed against the same without, in alternating
/// rounds (each on a fresh file; the first variant alternates too), every customer a new one:
/// their data key is created with their first cart, whose cost is reported too.
async fn checkout_sealing(dir: &Path, quick: bool) {
    let (rounds, n) = if quick { (2, 200) } else { (8, 4_000) };
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut opens: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for sealed in order {
            let name = format!("sealing-{round}-{sealed}.sqlite");
            let run = checkout_run(checkout_store(dir, &name, sealed), n).await;
            rates[usize::from(sealed)].push(n as f64 / run.elapsed.as_secs_f64());
            opens[usize::from(sealed)].push(n as f64 / run.opening.as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let range = |v: &[f64]| format!("{:.0}–{:.0}", v[0], v[v.len() - 1]);
    // How much slower, in percent, sealed is than plain.
    let slower = |sealed: f64, plain: f64| (1.0 - sealed / plain) * 100.0;
    let plain = median(&mut rates[0]);
    let sealed = median(&mut rates[1]);
    row(
        "checkout commits, personal data in clear (reference)",
        format!("{plain:.0}/s"),
        &format!(
            "median of {rounds} rounds of {n}, range {}",
            range(&rates[0])
        ),
    );
    row(
        "checkout commits, personal data sealed (AES-256-GCM under the customer's key)",
        format!("{sealed:.0}/s"),
        &format!(
            "median of {rounds} rounds, range {}; **{:.1}% slower**",
            range(&rates[1]),
            slower(sealed, plain)
        ),
    );
    let plain = median(&mut opens[0]);
    let sealed = median(&mut opens[1]);
    row(
        "a new customer's first cart, one at a time, in clear (reference)",
        format!("{plain:.0}/s"),
        &format!("same rounds, range {}", range(&opens[0])),
    );
    row(
        "a new customer's first cart, one at a time, creating their data key",
        format!("{sealed:.0}/s"),
        &format!(
            "same rounds, range {}; {:.1}% slower",
            range(&opens[1]),
            slower(sealed, plain)
        ),
    );
}

// ----- a large realistic history: feed scan and rebuild ---------------------------------------

/// Appends whole order flows (9 real domain events each, decided by the aggregates) until at
/// least `target` events exist.
async fn fill(store: Arc<SqliteEventStore>, target: u64) {
    let products = 1_000usize;
    let mut product_states: Vec<(Product, u64)> = Vec::with_capacity(products);
    let mut commits = Vec::new();
    let mut creates = Vec::new();
    for p in 0..products {
        let id = ProductId::parse(&format!("p{p}")).expect("id");
        let st = Product::default();
        let evs = st
            .decide(ProductCommand::Create {
                product_id: id.clone(),
                name: format!("Product {p}"),
                category: format!("cat{}", p % 10),
                price: eur("9.99"),
                initial_stock: 10_000_000,
            })
            .expect("create");
        let mut st = Product::default();
        evs.iter().for_each(|e| st.evolve(e));
        creates.push(stream_append(StreamType::Product, id.as_str(), 0, &evs));
        product_states.push((st, 1));
    }
    for chunk in creates.chunks(90) {
        store
            .append(Commit {
                streams: chunk.to_vec(),
                idempotency: None,
            })
            .await
            .expect("create products");
    }
    let mut written = products as u64;
    let mut i = 0u64;
    while written < target {
        let p = (i as usize * 31) % products;
        let pid = ProductId::parse(&format!("p{p}")).expect("id");
        let cart_id = CartId::parse(&format!("cart{i}")).expect("id");
        let order_id = OrderId::parse(&format!("ord{i}")).expect("id");
        let payment_id = PaymentId::parse(&format!("pay{i}")).expect("id");
        let customer = CustomerId::parse(&format!("cust{}", i % 5_000)).expect("id");
        let qty = Quantity::parse(1).expect("qty");
        let now = chrono::Utc::now();
        let cart_events = decide_in_turn(
            [
                CartCommand::Open {
                    cart_id: cart_id.clone(),
                    customer_id: customer.clone(),
                },
                CartCommand::AddItem {
                    product_id: pid.clone(),
                    quantity: qty,
                    unit_price: eur("9.99"),
                },
                CartCommand::CheckOut {
                    order_id: order_id.clone(),
                },
            ],
            Cart::decide,
            Cart::evolve,
        );
        let (product, version) = &mut product_states[p];
        let reserve = product
            .decide(ProductCommand::ReserveStock {
                order_id: order_id.clone(),
                quantity: 1,
            })
            .expect("reserve");
        let product_expected = *version;
        for e in &reserve {
            product.evolve(e);
        }
        *version += reserve.len() as u64;
        let order_events = decide_in_turn(
            [
                OrderCommand::Place {
                    order_id: order_id.clone(),
                    cart_id: cart_id.clone(),
                    customer_id: customer.clone(),
                    customer_email: format!("{customer}@example.com"),
                    shipping_address: address(),
                    lines: vec![OrderLine {
                        product_id: pid.clone(),
                        name: format!("Product {p}"),
                        quantity: qty,
                        unit_price: eur("9.99"),
                        line_total: eur("9.99"),
                    }],
                    payment_id: payment_id.clone(),
                    placed_at: now,
                },
                OrderCommand::MarkPaid {
                    payment_id: payment_id.clone(),
                    amount: eur("9.99"),
                    at: now,
                },
            ],
            Order::decide,
            Order::evolve,
        );
        let payment_events = decide_in_turn(
            [
                PaymentCommand::Request {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    amount: eur("9.99"),
                },
                PaymentCommand::RecordIntentCreated {
                    intent_id: format!("pi_{i}"),
                },
                PaymentCommand::RecordSucceeded {
                    intent_id: format!("pi_{i}"),
                    charge_id: Some(format!("ch_{i}")),
                    amount: eur("9.99"),
                    at: now,
                },
            ],
            Payment::decide,
            Payment::evolve,
        );
        let n =
            (cart_events.len() + reserve.len() + order_events.len() + payment_events.len()) as u64;
        commits.push(Commit {
            streams: vec![
                stream_append(StreamType::Cart, cart_id.as_str(), 0, &cart_events),
                stream_append(
                    StreamType::Product,
                    pid.as_str(),
                    product_expected,
                    &reserve,
                ),
                stream_append(StreamType::Order, order_id.as_str(), 0, &order_events),
                stream_append(StreamType::Payment, payment_id.as_str(), 0, &payment_events),
            ],
            idempotency: None,
        });
        written += n;
        i += 1;
        // Product versions must be appended in order: flush in waves with distinct products.
        if commits.len() == products {
            flush(&store, std::mem::take(&mut commits)).await;
        }
    }
    flush(&store, commits).await;
}

/// Decides `commands` in turn on a fresh aggregate, evolving it with each outcome; returns
/// every event decided.
fn decide_in_turn<S: Default, C, E, Err: std::fmt::Debug>(
    commands: impl IntoIterator<Item = C>,
    decide: impl Fn(&S, C) -> Result<Vec<E>, Err>,
    evolve: impl Fn(&mut S, &E),
) -> Vec<E> {
    let mut state = S::default();
    let mut events = Vec::new();
    for command in commands {
        for e in decide(&state, command).expect("decide") {
            evolve(&mut state, &e);
            events.push(e);
        }
    }
    events
}

/// `events` appended to the stream `id` of `stream_type` after `expected_version`.
fn stream_append<E: Event>(
    stream_type: domain::StreamType,
    id: &str,
    expected_version: u64,
    events: &[E],
) -> StreamAppend {
    StreamAppend {
        stream: StreamRef::new(stream_type, id),
        expected_version,
        events: events.iter().map(new_event).collect(),
        snapshot: None,
    }
}

async fn flush(store: &Arc<SqliteEventStore>, commits: Vec<Commit>) {
    let mut tasks = Vec::new();
    let per = commits.len().div_ceil(32).max(1);
    let mut commits = commits;
    while !commits.is_empty() {
        let rest = commits.split_off(commits.len().min(per));
        let chunk = std::mem::replace(&mut commits, rest);
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for c in chunk {
                store.append(c).await.expect("append flow");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
}

async fn history(dir: &Path, target: u64) {
    let store = open(dir, "history.sqlite", Synchronous::Full);
    let start = Instant::now();
    fill(store.clone(), target).await;
    let head = store.head().await.expect("head").count();
    row(
        "bulk load of order flows (9 events per commit, 32 concurrent)",
        per_sec(head, start.elapsed()),
        &format!("{head} events written"),
    );
    // Decoded feed scan.
    let start = Instant::now();
    let mut after = 0;
    let mut n = 0u64;
    loop {
        let page = store
            .feed(&FeedCursor::at(after), 10_000)
            .await
            .expect("feed");
        if page.is_empty() {
            break;
        }
        n += page.len() as u64;
        after = page
            .last()
            .and_then(|e| e.global_position)
            .expect("position");
    }
    row(
        "decoded feed scan (EventEnvelope, pages of 10,000)",
        per_sec(n, start.elapsed()),
        &format!("{n} events"),
    );
    // Rebuild of all four projections.
    let models =
        Arc::new(SqliteReadModelStore::open(dir.join("readmodels.sqlite")).expect("models"));
    let start = Instant::now();
    let summary = projections::rebuild_all(
        store.clone(),
        models,
        &projections::all_projections(),
        projections::runner::REBUILD_BATCH,
        |_, _| {},
    )
    .await
    .expect("rebuild");
    row(
        "rebuild of all 4 projections from position 0",
        per_sec(summary.events, start.elapsed()),
        &format!(
            "{} feed events, {} projection applies",
            summary.events, summary.applied
        ),
    );
}

async fn loads(dir: &Path) {
    for (label, every) in [
        ("without snapshots", u64::MAX),
        ("with snapshots every 100", 100),
    ] {
        let store = open(dir, &format!("load-{every}.sqlite"), Synchronous::Normal);
        let svc = CommandService::new(
            store.clone(),
            Arc::new(SystemClock),
            ServiceConfig {
                snapshot_every: every,
                ..ServiceConfig::default()
            },
        );
        let shop = Shop::new(Arc::new(svc), Arc::new(SimulatedGateway::new()));
        let ctx = CommandContext {
            metadata: meta(),
            idempotency: None,
        };
        shop.create_product(
            &ctx,
            NewProduct {
                product_id: ProductId::parse("big").expect("id"),
                name: "Big".into(),
                category: "bench".into(),
                price: eur("1.00"),
                initial_stock: 0,
            },
        )
        .await
        .expect("create");
        for _ in 1..10_000 {
            shop.product_command(&ctx, "big", |_| ProductCommand::Restock { quantity: 1 })
                .await
                .expect("restock");
        }
        let mut lat = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let loaded = shop.service().load::<Product>("big").await.expect("load");
            lat.push(t.elapsed());
            assert_eq!(loaded.version, 10_000);
        }
        lat.sort();
        row(
            &format!("load + fold of a 10,000-event stream, {label}"),
            ms(pct(&lat, 0.5)),
            &format!("p50 of 50 loads (p99 {})", ms(pct(&lat, 0.99))),
        );
    }
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| measurement | result | notes |");
    println!("|---|---|---|");
    match a.only.as_deref() {
        Some("sealing") => {
            rt.block_on(checkout_sealing(dir.path(), a.quick));
            return;
        }
        Some("loads") => {
            rt.block_on(loads(dir.path()));
            return;
        }
        Some("history") => {
            raw_baselines(dir.path(), a.quick);
            rt.block_on(history(dir.path(), a.events));
            return;
        }
        _ => {}
    }
    raw_baselines(dir.path(), a.quick);
    rt.block_on(async {
        appends(dir.path(), a.quick).await;
        checkouts(dir.path(), a.quick).await;
        checkout_sealing(dir.path(), a.quick).await;
        loads(dir.path()).await;
        history(dir.path(), a.events).await;
    });
}
