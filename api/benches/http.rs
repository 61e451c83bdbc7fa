//! HTTP benchmark: `cargo bench -p api --bench http [-- --secs N]`.
//!
//! Starts the real embedded app (synchronous=FULL, temp data dir) and a trivial axum handler on
//! 127.0.0.1 and drives both from 64 keep-alive HTTP/1 connections for a fixed time. The load
//! generator works like `oha` or `wrk`: one hyper client connection per worker, requests sent
//! back to back, every response body read. It prints a Markdown table: requests/s and p50/p99
//! for the trivial handler (the ceiling), add-to-cart and checkout, plus the lag from a
//! checkout's response to the order-history read model showing it. Two more rows split the
//! gap between them: add-to-cart's own request sent to the trivial handler (the cost of the
//! request's bytes) and the app's auth path alone (a 403).
//!
//! Options:
//! - `--secs N` (default 10);
//! - `--only trivial|post|auth|add|checkout|lag`: one measurement, for profiling;
//! - `--adds-per-cart N` (default 40);
//! - `--rounds N`: N alternating rounds of the ceiling and add-to-cart with the medians, instead
//!   of the single pass; checkout and lag then run once after them unless `--only` says
//!   otherwise;
//! - `--get PATH`: GETs of one app route as a customer, before the rest; with `--post BODY`
//!   they are POSTs of BODY;
//! - `--sync normal`: the store without an fsync per commit (not durable; a diagnostic).

use api::auth::{mint_hs256, Role};
use api::compose::{start_embedded, EmbeddedConfig};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
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

/// One keep-alive HTTP/1 connection.
struct Conn {
    addr: SocketAddr,
    send: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, send: None }
    }

    async fn connect(
        &mut self,
    ) -> Option<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            self.send = Some(send);
        }
        let send = self.send.as_mut()?;
        send.ready().await.ok()?;
        Some(send)
    }

    /// Sends one request and reads the whole response; `None` on a transport error.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
        body: Option<Bytes>,
        parse: bool,
    ) -> Option<Reply> {
        let host = self.addr.to_string();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, token.clone());
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default())).ok()?;
        let send = self.connect().await?;
        let response = match send.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                self.send = None;
                return None;
            }
        };
        let status = response.status();
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        let body = if parse {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        Some(Reply { status, body })
    }

    /// Sends one request and times it: `None` on a transport error or when `accept` refuses
    /// the status.
    async fn timed(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
        body: Option<Bytes>,
        accept: fn(StatusCode) -> bool,
    ) -> Option<Duration> {
        let t = Instant::now();
        let reply = self.call(method, path, token, body, false).await?;
        accept(reply.status).then(|| t.elapsed())
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

fn json_body(v: &Value) -> Option<Bytes> {
    Some(Bytes::from(serde_json::to_vec(v).expect("json")))
}

/// Runs `CONNECTIONS` workers for `secs`, each on its own connection to `addr`; each calls
/// `op(conn, worker, i)` in a loop, which returns the connection and the latency of the
/// measured request (`None` on error).
async fn drive<F, Fut>(secs: u64, addr: SocketAddr, op: F) -> Run
where
    F: Fn(Conn, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Conn, Option<Duration>)> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..CONNECTIONS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0, 0);
            let mut conn = Conn::new(addr);
            while Instant::now() < deadline {
                let (back, outcome) = op(conn, w, i).await;
                conn = back;
                match outcome {
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
    let mut rounds: usize = 1;
    let mut get: Option<String> = None;
    let mut post_body: Option<String> = None;
    let mut sync_normal = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--only" => only = args.next(),
            "--get" => get = args.next(),
            "--post" => post_body = args.next(),
            "--sync" => sync_normal = args.next().as_deref() == Some("normal"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
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
    rt.block_on(run(
        secs,
        only,
        adds_per_cart.max(1),
        rounds.max(1),
        Options {
            probe: get.map(|p| (p, post_body)),
            sync_normal,
        },
    ));
}

/// The ceiling: GETs to the trivial handler.
async fn measure_trivial(secs: u64, trivial_addr: SocketAddr) -> Run {
    drive(secs, trivial_addr, |mut conn, _, _| async move {
        let took = conn
            .timed(Method::GET, "/", None, None, |s| s.is_success())
            .await;
        (conn, took)
    })
    .await
}

/// The ceiling for the request's shape: the add-to-cart request itself (POST, bearer token, JSON
/// body) sent to a trivial handler that ignores it and answers "ok". Not the target's ceiling
/// (that is the GET above); it separates the cost of the request's bytes from the app's.
async fn measure_trivial_post(secs: u64, trivial_addr: SocketAddr, token: HeaderValue) -> Run {
    let body = Bytes::from_static(br#"{"product_id":"bench1","quantity":1}"#);
    drive(secs, trivial_addr, move |mut conn, _, _| {
        let (token, body) = (token.clone(), body.clone());
        async move {
            let took = conn
                .timed(
                    Method::POST,
                    "/v1/carts/01890000-0000-7000-8000-000000000000/items",
                    Some(&token),
                    Some(body),
                    |s| s.is_success(),
                )
                .await;
            (conn, took)
        }
    })
    .await
}

/// Add-to-cart: each connection adds to its own carts (16 products in turn, so a cart has up to
/// 16 lines), a new cart every `adds_per_cart` adds; only the adds are timed.
async fn measure_add(
    secs: u64,
    addr: SocketAddr,
    tokens: Arc<Vec<HeaderValue>>,
    adds_per_cart: usize,
) -> Run {
    let carts: Arc<Vec<std::sync::Mutex<String>>> = Arc::new(
        (0..CONNECTIONS)
            .map(|_| std::sync::Mutex::new(String::new()))
            .collect(),
    );
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..16)
            .map(|p| {
                Bytes::from(
                    serde_json::to_vec(&json!({"product_id": format!("bench{p}"), "quantity": 1}))
                        .expect("json"),
                )
            })
            .collect(),
    );
    let (tk, cs) = (tokens, carts);
    drive(secs, addr, move |mut conn, w, i| {
        let (tk, cs, bodies) = (tk.clone(), cs.clone(), bodies.clone());
        async move {
            let mut cart = cs[w].lock().map(|c| c.clone()).unwrap_or_default();
            if i % adds_per_cart == 0 {
                match open_cart(&mut conn, &tk[w]).await {
                    Some(id) => cart = id,
                    None => return (conn, None),
                }
                if let Ok(mut c) = cs[w].lock() {
                    c.clone_from(&cart);
                }
            }
            let path = format!("/v1/carts/{cart}/items");
            let took = conn
                .timed(
                    Method::POST,
                    &path,
                    Some(&tk[w]),
                    Some(bodies[i % 16].clone()),
                    |s| s.is_success(),
                )
                .await;
            (conn, took)
        }
    })
    .await
}

/// The options beyond the measurements' own.
struct Options {
    /// `--get PATH [--post BODY]`: one app route to measure.
    probe: Option<(String, Option<String>)>,
    /// `--sync normal`: no fsync per commit. Not durable; for finding where the time goes.
    sync_normal: bool,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn checkout_body() -> Option<Bytes> {
    json_body(
        &json!({"email": "b@example.com", "shipping_address": {"name": "B", "line1": "1 Road",
        "city": "Town", "postal_code": "1", "country": "DE"}}),
    )
}

async fn open_cart(conn: &mut Conn, token: &HeaderValue) -> Option<String> {
    let r = conn
        .call(
            Method::POST,
            "/v1/carts",
            Some(token),
            json_body(&json!({})),
            true,
        )
        .await?;
    Some(r.body["cart_id"].as_str()?.to_string())
}

async fn run(secs: u64, only: Option<String>, adds_per_cart: usize, rounds: usize, opts: Options) {
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    // The ceiling: a trivial axum handler in the same process and runtime.
    let trivial = axum::Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/v1/carts/{id}/items",
            axum::routing::post(|| async { "ok" }),
        );
    let tl = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let trivial_addr = tl.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(tl, trivial).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EmbeddedConfig::new(dir.path());
    config.synchronous_normal = opts.sync_normal;
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
    let ttl = Duration::from_secs(3600);
    let admin = bearer(&mint_hs256(secret.as_bytes(), "admin", Role::Admin, ttl).expect("token"));
    let mut setup = Conn::new(addr);
    for p in 0..16 {
        let body = json!({"product_id": format!("bench{p}"), "name": format!("Bench {p}"),
                          "category": "bench", "price": {"amount": "1.00", "currency": "EUR"},
                          "initial_stock": 1_000_000});
        let r = setup
            .call(
                Method::POST,
                "/v1/admin/products",
                Some(&admin),
                json_body(&body),
                false,
            )
            .await
            .expect("create product");
        assert!(r.status.is_success(), "create product: {}", r.status);
    }
    let tokens: Arc<Vec<HeaderValue>> = Arc::new(
        (0..CONNECTIONS)
            .map(|w| {
                bearer(
                    &mint_hs256(secret.as_bytes(), &format!("bench{w}"), Role::Customer, ttl)
                        .expect("token"),
                )
            })
            .collect(),
    );

    println!("| what | rate | p50 | p99 | errors | notes |");
    println!("|---|---|---|---|---|---|");

    let mut ceiling_rate = f64::NAN;
    if let Some((path, body)) = opts.probe {
        // One app route, as a customer: what it costs beyond the transport.
        let tk = tokens.clone();
        let (p, b) = (path.clone(), body.clone().map(Bytes::from));
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let m = method.clone();
        let run = drive(secs, addr, move |mut conn, w, _| {
            let (tk, path, body, method) = (tk.clone(), p.clone(), b.clone(), m.clone());
            async move {
                let took = conn
                    .timed(method, &path, Some(&tk[w]), body, |s| !s.is_server_error())
                    .await;
                (conn, took)
            }
        })
        .await;
        row(
            &format!("{method} {path} (--get)"),
            &run,
            "customer token; any answer but 5xx counts",
        );
    }
    if rounds > 1 {
        // Alternating rounds of the ceiling and add-to-cart, each pair measured back to back,
        // then the medians: on a noisy machine the per-round ratio is steadier than either rate.
        let mut ratios = Vec::new();
        let (mut trivial_rates, mut add_rates, mut add_p99s) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            let ceiling = measure_trivial(secs, trivial_addr).await;
            row(
                &format!("round {round}: trivial axum handler"),
                &ceiling,
                "GET",
            );
            let add = measure_add(secs, addr, tokens.clone(), adds_per_cart).await;
            let ratio = 100.0 * add.rate / ceiling.rate;
            row(
                &format!("round {round}: add-to-cart"),
                &add,
                &format!("{ratio:.1}% of this round's ceiling"),
            );
            trivial_rates.push(ceiling.rate);
            add_rates.push(add.rate);
            add_p99s.push(pct(&add.lat, 0.99).as_secs_f64() * 1e3);
            ratios.push(ratio);
        }
        println!(
            "| median of {rounds} rounds | trivial {:.0}/s, add-to-cart {:.0}/s | | add p99 {:.2} ms (worst {:.2} ms) | | **add-to-cart at {:.1}% of the ceiling** (rounds: {}) |",
            median(&mut trivial_rates),
            median(&mut add_rates),
            median(&mut add_p99s),
            add_p99s.iter().copied().fold(0.0, f64::max),
            median(&mut ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        if wants("trivial") {
            let ceiling = measure_trivial(secs, trivial_addr).await;
            row(
                "trivial axum handler (ceiling)",
                &ceiling,
                "GET, same process",
            );
            ceiling_rate = ceiling.rate;
        }
        if wants("post") {
            let post = measure_trivial_post(secs, trivial_addr, tokens[0].clone()).await;
            row(
                "trivial axum handler, add-to-cart's request (not the ceiling)",
                &post,
                &format!(
                    "POST with token and JSON body, answers \"ok\"; {:.0}% of the ceiling",
                    100.0 * post.rate / ceiling_rate
                ),
            );
        }
        if wants("auth") {
            // The app's own HTTP path up to the role check: request ids and span, the token,
            // the error body. A customer asking for an admin route gets 403.
            let tk = tokens.clone();
            let auth = drive(secs, addr, move |mut conn, w, _| {
                let tk = tk.clone();
                async move {
                    let took = conn
                        .timed(
                            Method::GET,
                            "/v1/admin/projections",
                            Some(&tk[w]),
                            None,
                            |s| s == StatusCode::FORBIDDEN,
                        )
                        .await;
                    (conn, took)
                }
            })
            .await;
            row(
                "the app's auth path: customer GET of an admin route (403)",
                &auth,
                &format!(
                    "request ids, span, token check, error body; {:.0}% of the ceiling",
                    100.0 * auth.rate / ceiling_rate
                ),
            );
        }
        if wants("add") {
            let add = measure_add(secs, addr, tokens.clone(), adds_per_cart).await;
            row(
                &format!(
                    "add-to-cart (POST /v1/carts/{{id}}/items), {adds_per_cart} adds per cart"
                ),
                &add,
                &format!("{:.0}% of the ceiling", 100.0 * add.rate / ceiling_rate),
            );
        }
    }

    if wants("checkout") {
        // Checkout: open a cart, add two lines, check out; only the checkout is timed.
        let tk = tokens.clone();
        let checkout = drive(secs, addr, move |mut conn, w, i| {
            let tk = tk.clone();
            async move {
                let Some(cart) = open_cart(&mut conn, &tk[w]).await else {
                    return (conn, None);
                };
                for k in 0..2 {
                    let body =
                        json!({"product_id": format!("bench{}", (i + k * 7) % 16), "quantity": 1});
                    let path = format!("/v1/carts/{cart}/items");
                    if conn
                        .call(Method::POST, &path, Some(&tk[w]), json_body(&body), false)
                        .await
                        .is_none()
                    {
                        return (conn, None);
                    }
                }
                let path = format!("/v1/carts/{cart}/checkout");
                let took = conn
                    .timed(Method::POST, &path, Some(&tk[w]), checkout_body(), |s| {
                        s.is_success()
                    })
                    .await;
                (conn, took)
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
        let mut conn = Conn::new(addr);
        for i in 0..200 {
            let tk = &tokens[i % CONNECTIONS];
            let cart = open_cart(&mut conn, tk).await.expect("cart");
            let body = json!({"product_id": "bench1", "quantity": 1});
            conn.call(
                Method::POST,
                &format!("/v1/carts/{cart}/items"),
                Some(tk),
                json_body(&body),
                false,
            )
            .await
            .expect("add");
            let r = conn
                .call(
                    Method::POST,
                    &format!("/v1/carts/{cart}/checkout"),
                    Some(tk),
                    checkout_body(),
                    true,
                )
                .await
                .expect("checkout");
            let answered = Instant::now();
            let order = r.body["order_id"].as_str().expect("order").to_string();
            loop {
                let r = conn
                    .call(
                        Method::GET,
                        &format!("/v1/orders/{order}"),
                        Some(tk),
                        None,
                        false,
                    )
                    .await
                    .expect("get");
                if r.status.is_success() {
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
