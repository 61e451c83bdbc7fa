//! HTTP benchmark: `cargo bench -p api --bench http [-- --secs N]`.
//!
//! Starts the real embedded app (synchronous=FULL, temp data dir) and a trivial axum handler on
//! 127.0.0.1, drives both from 64 concurrent connections with reqwest for a fixed time, and
//! prints a Markdown table: requests/s and p50/p99 for the trivial handler (the ceiling),
//! add-to-cart and checkout, plus the lag from a checkout's response to the order-history read
//! model showing it.

use api::auth::{mint_hs256, Role};
use api::compose::{start_embedded, EmbeddedConfig};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;

// The same allocator as the `backbone` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Run {
    rate: f64,
    lat: Vec<Duration>,
    errors: usize,
}

fn row(what: &str, r: &Run, note: &str) {
    println!(
        "| {what} | {:.0}/s | {} | {} | {} | {note} |",
        r.rate,
        ms(pct(&r.lat, 0.5)),
        ms(pct(&r.lat, 0.99)),
        r.errors
    );
}

/// Runs `CONNECTIONS` workers for `secs`; each calls `op(worker, i)` in a loop, which returns
/// the latency of the measured request (or `None` on error).
async fn drive<F, Fut>(secs: u64, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<Duration>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..CONNECTIONS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0, 0);
            while Instant::now() < deadline {
                match op(w, i).await {
                    Some(d) => lat.push(d),
                    None => errors += 1,
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("join");
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    lat.sort();
    Run {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        lat,
        errors,
    }
}

fn main() {
    let mut secs = 10;
    let mut only = None;
    let mut adds_per_cart: usize = 40;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            // `--only add|checkout|lag|trivial`: one measurement, for profiling.
            "--only" => only = args.next(),
            // `--adds-per-cart N`: how many add-to-cart calls each cart gets (default 40).
            "--adds-per-cart" => {
                adds_per_cart = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(adds_per_cart)
            }
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, only, adds_per_cart.max(1)));
}

async fn run(secs: u64, only: Option<String>, adds_per_cart: usize) {
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    // The ceiling: a trivial axum handler in the same process and runtime.
    let trivial = axum::Router::new().route("/", get(|| async { "ok" }));
    let tl = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let trivial_addr = tl.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(tl, trivial).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedConfig::new(dir.path());
    let secret = config.hs256_secret().expect("secret");
    let embedded = start_embedded(config).await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve_until(listener, embedded, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let ttl = Duration::from_secs(3600);
    let admin = mint_hs256(secret.as_bytes(), "admin", Role::Admin, ttl).expect("token");
    for p in 0..16 {
        let r = client
            .post(format!("{base}/v1/admin/products"))
            .bearer_auth(&admin)
            .json(
                &json!({"product_id": format!("bench{p}"), "name": format!("Bench {p}"),
                          "category": "bench", "price": {"amount": "1.00", "currency": "EUR"},
                          "initial_stock": 1_000_000}),
            )
            .send()
            .await
            .expect("create product");
        assert!(r.status().is_success(), "create product: {}", r.status());
    }
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..CONNECTIONS)
            .map(|w| {
                mint_hs256(secret.as_bytes(), &format!("bench{w}"), Role::Customer, ttl)
                    .expect("token")
            })
            .collect(),
    );

    println!("| what | rate | p50 | p99 | errors | notes |");
    println!("|---|---|---|---|---|---|");

    let mut ceiling_rate = f64::NAN;
    if wants("trivial") {
        let c = client.clone();
        let url = format!("http://{trivial_addr}/");
        let ceiling = drive(secs, move |_, _| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let t = Instant::now();
                let r = c.get(&url).send().await.ok()?;
                let ok = r.status().is_success();
                r.bytes().await.ok()?;
                ok.then(|| t.elapsed())
            }
        })
        .await;
        row(
            "trivial axum handler (ceiling)",
            &ceiling,
            "GET, same process",
        );
        ceiling_rate = ceiling.rate;
    }

    if wants("add") {
        // Add-to-cart: each connection adds to its own carts (16 products in turn, so a cart has
        // up to 16 lines), a new cart every `adds_per_cart` adds.
        let carts: Arc<Vec<tokio::sync::Mutex<String>>> = Arc::new(
            (0..CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(String::new()))
                .collect(),
        );
        let (c, b, tk, cs) = (client.clone(), base.clone(), tokens.clone(), carts.clone());
        let add = drive(secs, move |w, i| {
            let (c, b, tk, cs) = (c.clone(), b.clone(), tk.clone(), cs.clone());
            async move {
                let mut cart = cs[w].lock().await;
                if i % adds_per_cart == 0 {
                    let r = c
                        .post(format!("{b}/v1/carts"))
                        .bearer_auth(&tk[w])
                        .json(&json!({}))
                        .send()
                        .await
                        .ok()?;
                    *cart = r.json::<serde_json::Value>().await.ok()?["cart_id"]
                        .as_str()?
                        .to_string();
                }
                let t = Instant::now();
                let r = c
                    .post(format!("{b}/v1/carts/{cart}/items"))
                    .bearer_auth(&tk[w])
                    .json(&json!({"product_id": format!("bench{}", i % 16), "quantity": 1}))
                    .send()
                    .await
                    .ok()?;
                // The body is read, as a real client does (and so the connection is reused).
                let ok = r.status().is_success();
                r.bytes().await.ok()?;
                ok.then(|| t.elapsed())
            }
        })
        .await;
        row(
            &format!("add-to-cart (POST /v1/carts/{{id}}/items), {adds_per_cart} adds per cart"),
            &add,
            &format!("{:.0}% of the ceiling", 100.0 * add.rate / ceiling_rate),
        );
    }

    if wants("checkout") {
        // Checkout: open a cart, add two lines, check out; only the checkout is timed.
        let (c, b, tk) = (client.clone(), base.clone(), tokens.clone());
        let checkout = drive(secs, move |w, i| {
        let (c, b, tk) = (c.clone(), b.clone(), tk.clone());
        async move {
            let r = c.post(format!("{b}/v1/carts")).bearer_auth(&tk[w]).json(&json!({})).send().await.ok()?;
            let cart = r.json::<serde_json::Value>().await.ok()?["cart_id"].as_str()?.to_string();
            for k in 0..2 {
                c.post(format!("{b}/v1/carts/{cart}/items"))
                    .bearer_auth(&tk[w])
                    .json(&json!({"product_id": format!("bench{}", (i + k * 7) % 16), "quantity": 1}))
                    .send()
                    .await
                    .ok()?
                    .bytes()
                    .await
                    .ok()?;
            }
            let t = Instant::now();
            let r = c
                .post(format!("{b}/v1/carts/{cart}/checkout"))
                .bearer_auth(&tk[w])
                .json(&json!({"email": "b@example.com", "shipping_address": {"name": "B", "line1": "1 Road",
                              "city": "Town", "postal_code": "1", "country": "DE"}}))
                .send()
                .await
                .ok()?;
            // The body is read, as a real client does (and so the connection is reused).
            let ok = r.status().is_success();
            r.bytes().await.ok()?;
            ok.then(|| t.elapsed())
        }
    })
    .await;
        row(
            "checkout (POST /v1/carts/{id}/checkout)",
            &checkout,
            "2 lines; includes the simulated intent creation",
        );
    }

    if wants("lag") {
        // Projection lag: checkout response → the order visible in order history.
        let mut lags = Vec::new();
        for i in 0..200 {
            let tk = &tokens[i % CONNECTIONS];
            let r = client
                .post(format!("{base}/v1/carts"))
                .bearer_auth(tk)
                .json(&json!({}))
                .send()
                .await
                .expect("cart");
            let cart = r.json::<serde_json::Value>().await.expect("json")["cart_id"]
                .as_str()
                .expect("id")
                .to_string();
            client
                .post(format!("{base}/v1/carts/{cart}/items"))
                .bearer_auth(tk)
                .json(&json!({"product_id": "bench1", "quantity": 1}))
                .send()
                .await
                .expect("add");
            let r = client.post(format!("{base}/v1/carts/{cart}/checkout")).bearer_auth(tk)
            .json(&json!({"email": "b@example.com", "shipping_address": {"name": "B", "line1": "1 Road",
                          "city": "Town", "postal_code": "1", "country": "DE"}}))
            .send().await.expect("checkout");
            let answered = Instant::now();
            let order = r.json::<serde_json::Value>().await.expect("json")["order_id"]
                .as_str()
                .expect("order")
                .to_string();
            loop {
                let r = client
                    .get(format!("{base}/v1/orders/{order}"))
                    .bearer_auth(tk)
                    .send()
                    .await
                    .expect("get");
                if r.status().is_success() {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            lags.push(answered.elapsed());
        }
        lags.sort();
        println!(
        "| lag: checkout response → order in order history | {} samples | {} | {} | 0 | polled every 0.2 ms, includes one GET |",
        lags.len(),
        ms(pct(&lags, 0.5)),
        ms(pct(&lags, 0.99))
    );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}
