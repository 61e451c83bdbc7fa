#![forbid(unsafe_code)]
//! Shared helpers for the end-to-end suites: [`spawn_app`] starts the embedded backbone on
//! 127.0.0.1:0 with a fresh temporary data directory and stops everything it started;
//! [`scenario`] is the shop flow every backend runs, and [`test_on_both_backends!`] declares a
//! scenario's test on each backend.

pub mod aws;
pub mod bench;
pub mod mail;
pub mod scenario;
pub mod throttle;

use api::auth::{self, Claims, Role};
use api::{start_embedded, AppState, EmbeddedConfig};
use commands::FeedCursor;
use commands::{EventEnvelope, EventStore};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use workers::{CancellationToken, LoopConfig};

/// A running app.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    /// The in-process state, to compare the API with the store (for example the feed).
    pub state: AppState,
    /// How long a read model may take to follow a command on this backend.
    pub wait: Duration,
    secret: String,
    cancel: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

/// An HTTP answer: status, headers and the JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// Reads a response whole.
    async fn of(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts that this is an error answer with `status` and the error `code`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
    }

    /// The field a validation error names.
    pub fn field(&self) -> &str {
        self.body["error"]["details"]["field"]
            .as_str()
            .unwrap_or("")
    }

    pub fn position(&self) -> u64 {
        self.body["position"].as_u64().unwrap_or(0)
    }

    /// The command's consistency token (read-your-writes); empty when it answered none.
    pub fn consistency(&self) -> &str {
        self.body["consistency"].as_str().unwrap_or("")
    }

    /// The event types of a stream answer (`GET /v1/streams/...`), in stream order.
    pub fn event_types(&self) -> Vec<&str> {
        self.body["events"]
            .as_array()
            .expect("a stream answer")
            .iter()
            .map(|e| e["event_type"].as_str().expect("an event type"))
            .collect()
    }

    /// How many events of `event_type` a stream answer holds.
    pub fn count_events(&self, event_type: &str) -> usize {
        self.event_types()
            .into_iter()
            .filter(|t| *t == event_type)
            .count()
    }
}

/// A checkout that answered 201 Created, and the ids it answered.
#[derive(Debug)]
pub struct Placed {
    pub order_id: String,
    pub payment_id: String,
    pub answer: Answer,
}

/// Declares the test `$name`: `$scenario(&app)` on a fresh embedded app, which is shut down
/// afterwards. A scenario is an `async fn(&TestApp)`.
#[macro_export]
macro_rules! embedded_test {
    ($name:ident, $scenario:path) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let app = $crate::spawn_app().await;
            $scenario(&app).await;
            app.shutdown().await;
        }
    };
}

/// Declares the test `$name`: `$scenario(&app)` on a fresh AWS stage on moto
/// ([`aws::spawn_aws_app`], with the relay and consumers in process when `workers` is true).
#[macro_export]
macro_rules! dynamodb_test {
    ($name:ident, $scenario:path, workers: $workers:expr) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let (app, _stage) = $crate::aws::spawn_aws_app($workers).await;
            $scenario(&app).await;
            app.shutdown().await;
        }
    };
}

/// One scenario as two tests, [`embedded_test!`] `$embedded` and [`dynamodb_test!`]
/// `$on_dynamodb`: what a backend must do, each backend does.
#[macro_export]
macro_rules! test_on_both_backends {
    (
        $scenario:path,
        embedded: $embedded:ident,
        on_dynamodb: $on_dynamodb:ident,
        workers: $workers:expr
    ) => {
        $crate::embedded_test!($embedded, $scenario);
        $crate::dynamodb_test!($on_dynamodb, $scenario, workers: $workers);
    };
}

/// Starts an app on a fresh temporary data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().expect("temp dir")).await
}

/// Starts an app on an existing data directory (restarts).
pub async fn spawn_app_in(data_dir: TempDir) -> TestApp {
    spawn_app_configured(data_dir, |_| {}).await
}

/// Starts an app whose configuration `customize` may change (for example real Stripe settings).
pub async fn spawn_app_configured(
    data_dir: TempDir,
    customize: impl FnOnce(&mut EmbeddedConfig),
) -> TestApp {
    let mut config = EmbeddedConfig {
        synchronous_normal: true,
        loop_config: LoopConfig {
            poll: Duration::from_millis(100),
            ..LoopConfig::default()
        },
        ..EmbeddedConfig::new(data_dir.path())
    };
    customize(&mut config);
    let secret = config.hs256_secret().expect("jwt secret");
    let embedded = start_embedded(config)
        .await
        .expect("start the embedded app");
    // Every worker has processed what start-up wrote (the demo catalog), so tests start from a
    // settled state.
    settle(&embedded.state).await;
    TestApp::serve(embedded, data_dir, secret, Duration::from_secs(10)).await
}

/// Waits until every worker that follows the feed (projections, process managers) has
/// processed everything committed so far.
pub async fn settle(state: &AppState) {
    // Health counts the events a worker has read over all feed partitions.
    let head = state.store.head().await.expect("head").count();
    for (worker, _) in state
        .health
        .snapshot()
        .into_iter()
        .filter(|(_, s)| s.follows_feed)
    {
        assert!(
            state
                .health
                .wait_for(&worker, head, Duration::from_secs(10))
                .await,
            "{worker} did not reach {head}"
        );
    }
}

/// Every file under `dir` (recursively) whose bytes contain `needle`, and how many files were
/// read. A byte search: it finds what SQLite keeps in its database and `-wal` files, whatever
/// the encoding around it.
pub fn files_containing(dir: &std::path::Path, needle: &str) -> (Vec<std::path::PathBuf>, usize) {
    fn walk(dir: &std::path::Path, needle: &[u8], found: &mut Vec<std::path::PathBuf>) -> usize {
        let mut read = 0;
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                read += walk(&path, needle, found);
                continue;
            }
            // A file SQLite removed meanwhile (a `-shm` at checkpoint) has nothing to find.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            read += 1;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
        read
    }
    assert!(!needle.is_empty());
    let mut found = Vec::new();
    let read = walk(dir, needle.as_bytes(), &mut found);
    found.sort();
    (found, read)
}

impl TestApp {
    /// Serves `running` on 127.0.0.1:0 until [`stop`](Self::stop); `secret` signs the tokens
    /// it accepts, and `wait` is how long its read models may lag.
    pub async fn serve(
        running: api::Embedded,
        data_dir: TempDir,
        secret: String,
        wait: Duration,
    ) -> TestApp {
        let state = running.state.clone();
        let cancel = running.cancel.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(api::serve_until(
            listener,
            running,
            std::future::pending::<()>(),
        ));
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            data_dir,
            state,
            wait,
            secret,
            cancel,
            server,
        }
    }

    /// A valid token for `sub` with `role`.
    pub fn token(&self, sub: &str, role: Role) -> String {
        auth::mint_hs256(self.secret.as_bytes(), sub, role, Duration::from_secs(3600))
            .expect("mint")
    }

    /// A valid token for `sub` with `role` and the OAuth `scope` (space-separated).
    pub fn scoped_token(&self, sub: &str, role: Role, scope: &str) -> String {
        auth::mint_hs256_scoped(
            self.secret.as_bytes(),
            sub,
            role,
            Some(scope),
            Duration::from_secs(3600),
        )
        .expect("mint")
    }

    /// A token that expired an hour ago.
    pub fn expired_token(&self, sub: &str, role: Role) -> String {
        let now = chrono::Utc::now().timestamp() as u64;
        auth::mint_hs256_claims(
            self.secret.as_bytes(),
            &Claims {
                sub: sub.into(),
                role: Some(role),
                exp: now - 3600,
                iat: Some(now - 7200),
                scope: None,
                other: serde_json::Map::new(),
            },
        )
        .expect("mint")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::of(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None, &[]).await
    }

    /// `GET path` as `token`, answered once the write behind `consistency` (a command's
    /// read-your-writes token) is reflected; a plain `GET` when `consistency` is empty.
    pub async fn get_consistent(&self, path: &str, token: &str, consistency: &str) -> Answer {
        if consistency.is_empty() {
            return self.get(path, token).await;
        }
        let separator = if path.contains('?') { '&' } else { '?' };
        self.get(
            &format!("{path}{separator}consistency={consistency}"),
            token,
        )
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(token), Some(body), &[])
            .await
    }

    /// `POST` under an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, token: &str, body: Value, key: &str) -> Answer {
        let headers = [("Idempotency-Key", key)];
        self.send(Method::POST, path, Some(token), Some(body), &headers)
            .await
    }

    /// Posts a provider event to `/v1/webhooks/stripe`, signed now with `secret`.
    pub async fn webhook(&self, body: &[u8], secret: &str) -> Answer {
        let signature = infrastructure::stripe::webhook::sign_for_test(
            secret,
            chrono::Utc::now().timestamp(),
            body,
        );
        let resp = self
            .client
            .post(self.url("/v1/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        Answer::of(resp).await
    }

    /// Opens a cart for the customer and returns its id.
    pub async fn open_cart(&self, token: &str) -> String {
        let a = self.post("/v1/carts", token, serde_json::json!({})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.body["cart_id"].as_str().expect("cart id").to_string()
    }

    /// `POST /v1/admin/products`: product `id` in category `misc` at `price` EUR with `stock`
    /// units, as `token` (an admin's). It must be created (201).
    pub async fn create_product(&self, token: &str, id: &str, price: &str, stock: u32) -> Answer {
        let product = serde_json::json!({ "product_id": id, "name": format!("Product {id}"),
                "category": "misc", "price": { "amount": price, "currency": "EUR" },
                "initial_stock": stock });
        self.create_product_from(token, product).await
    }

    /// `POST /v1/admin/products` of the product described by `product`, as `token` (an
    /// admin's). It must be created (201).
    pub async fn create_product_from(&self, token: &str, product: Value) -> Answer {
        let created = self.post("/v1/admin/products", token, product).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        created
    }

    /// `POST /v1/admin/products/{product}/{action}` with an empty body: `retire`, `unretire`.
    pub async fn product_action(&self, token: &str, product: &str, action: &str) -> Answer {
        let path = format!("/v1/admin/products/{product}/{action}");
        self.post(&path, token, serde_json::json!({})).await
    }

    /// Opens a cart, adds `items` and checks out; returns the checkout answer.
    pub async fn place_order(&self, token: &str, items: &[(&str, u32)]) -> Answer {
        self.place_order_with(token, items, checkout_body("alice@example.com"))
            .await
    }

    /// [`place_order`](Self::place_order), which must succeed.
    pub async fn place_order_ok(&self, token: &str, items: &[(&str, u32)]) -> Placed {
        let answer = self.place_order(token, items).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        let id = |field: &str| answer.body[field].as_str().expect(field).to_owned();
        Placed {
            order_id: id("order_id"),
            payment_id: id("payment_id"),
            answer,
        }
    }

    /// `GET /v1/streams/{stream_type}/{id}` as an analyst: the stream's events and state.
    pub async fn stream(&self, stream_type: &str, id: &str) -> Answer {
        let analyst = self.token("ana", Role::Analyst);
        self.get(&format!("/v1/streams/{stream_type}/{id}"), &analyst)
            .await
    }

    /// `POST /v1/carts/{cart}/items`: `quantity` of `product`.
    pub async fn add_item(&self, token: &str, cart: &str, product: &str, quantity: u32) -> Answer {
        self.post(
            &format!("/v1/carts/{cart}/items"),
            token,
            serde_json::json!({ "product_id": product, "quantity": quantity }),
        )
        .await
    }

    /// `POST /v1/payments/{payment_id}/confirm` with `payment_method` (a test card or method).
    pub async fn confirm_payment(
        &self,
        token: &str,
        payment_id: &str,
        payment_method: &str,
    ) -> Answer {
        self.post(
            &format!("/v1/payments/{payment_id}/confirm"),
            token,
            serde_json::json!({ "payment_method": payment_method }),
        )
        .await
    }

    /// `POST /v1/admin/projections/{projection}/rebuild`: starts rebuilding a read model.
    pub async fn rebuild_projection(&self, token: &str, projection: &str) -> Answer {
        let path = format!("/v1/admin/projections/{projection}/rebuild");
        self.post(&path, token, serde_json::json!({})).await
    }

    /// `POST /v1/orders/{order_id}/cancel` with `reason`.
    pub async fn cancel_order(&self, token: &str, order_id: &str, reason: &str) -> Answer {
        self.post(
            &format!("/v1/orders/{order_id}/cancel"),
            token,
            serde_json::json!({ "reason": reason }),
        )
        .await
    }

    /// [`place_order`](Self::place_order) with its own checkout body.
    pub async fn place_order_with(
        &self,
        token: &str,
        items: &[(&str, u32)],
        checkout: Value,
    ) -> Answer {
        let cart = self.open_cart(token).await;
        for (product, quantity) in items {
            let a = self.add_item(token, &cart, product, *quantity).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        }
        self.post(&format!("/v1/carts/{cart}/checkout"), token, checkout)
            .await
    }

    /// Stops the server and the workers and returns the data directory (for a restart).
    pub async fn stop(self) -> TempDir {
        self.cancel.cancel();
        let TestApp {
            data_dir,
            server,
            state,
            client,
            ..
        } = self;
        drop(client);
        drop(state);
        server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        data_dir
    }

    /// Stops everything this app started.
    pub async fn shutdown(self) {
        drop(self.stop().await);
    }
}

/// A valid checkout body.
pub fn checkout_body(email: &str) -> Value {
    serde_json::json!({
        "email": email,
        "shipping_address": {
            "name": "Alice Liddell",
            "line1": "1 Rabbit Hole",
            "city": "Oxford",
            "postal_code": "OX1 1AA",
            "country": "GB"
        }
    })
}

/// Polls `check` until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that each feed partition's positions run 1, 2, 3, ... in the order of `feed` (a whole
/// feed read from the start).
pub fn assert_partitions_gapless(feed: &[EventEnvelope]) {
    let mut per_partition: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for e in feed {
        let (partition, position) =
            commands::feed::unpack(e.global_position.expect("feed events carry a position"));
        per_partition.entry(partition).or_default().push(position);
    }
    for (partition, positions) in per_partition {
        assert_eq!(
            positions,
            (1..=positions.len() as u64).collect::<Vec<_>>(),
            "partition {partition}'s positions are gapless, in feed order"
        );
    }
}

/// Every event of `store`'s durable feed, in feed order.
pub async fn whole_feed(store: &dyn EventStore) -> Vec<EventEnvelope> {
    let mut out: Vec<EventEnvelope> = Vec::new();
    let mut after = FeedCursor::start();
    loop {
        let page = store.feed(&after, 1_000).await.expect("feed");
        if page.is_empty() {
            return out;
        }
        after = after.after(&page);
        out.extend(page);
    }
}
