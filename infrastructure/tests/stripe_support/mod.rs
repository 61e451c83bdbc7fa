//! Shared by the `stripe_*` test suites: an app over a fresh SQLite store, the Stripe fixtures,
//! and a tiny scripted HTTP server (a fake Stripe, or a webhook receiver).
#![allow(dead_code)]

#[path = "../support/shop.rs"]
mod shop;

use commands::{
    Caller, CommandContext, CommandService, EventStore, InMemoryPaymentLookup, IntentOwner,
    Metadata, NewProduct, PaymentGateway, Payments, ProcessManagers, ProviderEvent, RefundRequest,
    ServiceConfig, Shop, SystemClock, WebhookOutcome,
};
use domain::{CustomerId, Money, Order, OrderId, Payment, PaymentId, ProductId, Quantity};
use infrastructure::sqlite::{SqliteEventStore, SqliteOptions};
use infrastructure::stripe::{sign_for_test, StripeEvent, WebhookVerifier};
use shop::checkout_input;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `assert!(matches!(value, pattern))` that shows the value when it does not match.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)?) => {
        match &$value {
            value => assert!(matches!(value, $pattern $(if $guard)?), "{value:?}"),
        }
    };
}
pub(crate) use assert_matches;

pub const SECRET: &str = "whsec_test_backbone";

// ----- fixtures --------------------------------------------------------------------------------

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/stripe")
}

/// The raw bytes of a fixture, exactly as stored (they are signed as-is).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// Signs and verifies `body` with [`SECRET`], as the webhook route will.
pub fn deliver(body: &[u8]) -> StripeEvent {
    let t = now().timestamp();
    let header = sign_for_test(SECRET, t, body);
    WebhookVerifier::new([SECRET])
        .unwrap()
        .verify_and_parse(Some(&header), body, now())
        .unwrap_or_else(|e| panic!("verified payload refused: {e}"))
}

pub fn provider_event(body: &[u8]) -> ProviderEvent {
    deliver(body).into()
}

// ----- an app over SQLite ----------------------------------------------------------------------

pub struct App {
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn EventStore>,
    pub shop: Arc<Shop>,
    pub payments: Payments,
    pub lookup: Arc<InMemoryPaymentLookup>,
    pub pms: ProcessManagers,
    pub gateway: Arc<dyn PaymentGateway>,
}

pub fn app(gateway: Arc<dyn PaymentGateway>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(dir.path().join("events.sqlite"), SqliteOptions::default()).unwrap(),
    );
    let svc = Arc::new(CommandService::new(
        store.clone(),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    let shop = Arc::new(Shop::new(svc, gateway.clone()));
    let lookup = Arc::new(InMemoryPaymentLookup::new());
    let payments = Payments::new(shop.clone(), gateway.clone(), lookup.clone());
    let pms = ProcessManagers::new(shop.clone(), gateway.clone());
    App {
        _dir: dir,
        store,
        shop,
        payments,
        lookup,
        pms,
        gateway,
    }
}

pub fn ctx() -> CommandContext {
    shop::context("stripe-test")
}

pub fn eur(s: &str) -> Money {
    Money::parse(s, "EUR").unwrap()
}

/// A refund of `amount` of payment `pay_<n>` (order `ord_<n>`), paid through `intent_id`.
pub fn refund_request(n: &str, intent_id: &str, amount: &str, key: &str) -> RefundRequest {
    RefundRequest {
        payment_id: PaymentId::parse(&format!("pay_{n}")).unwrap(),
        order_id: OrderId::parse(&format!("ord_{n}")).unwrap(),
        intent_id: intent_id.into(),
        amount: eur(amount),
        idempotency_key: key.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: String,
    pub payment_id: String,
    /// `None` when the gateway failed at checkout.
    pub intent_id: Option<String>,
    pub client_secret: Option<String>,
}

/// A product, a cart with `quantity` of it at 10.00 EUR, and `checkout_and_pay`. The intent (when
/// created) is registered in the lookup, as the support projection would.
pub async fn place_order(app: &App, quantity: u32) -> Placed {
    let pid = format!("prod_{}", uuid::Uuid::now_v7().simple());
    app.shop
        .create_product(
            &ctx(),
            NewProduct {
                product_id: ProductId::parse(&pid).unwrap(),
                name: "Widget".into(),
                category: "tools".into(),
                price: eur("10.00"),
                initial_stock: 100,
            },
        )
        .await
        .unwrap();
    let customer = CustomerId::parse("cus_stripe").unwrap();
    let caller = Caller::Customer(customer.clone());
    let cart = app.shop.open_cart(&ctx(), &customer).await.unwrap();
    app.shop
        .add_item(
            &ctx(),
            &caller,
            &cart.value.cart_id,
            &pid,
            Quantity::parse(quantity).unwrap(),
        )
        .await
        .unwrap();
    let (receipt, intent) = app
        .shop
        .checkout_and_pay(&ctx(), &caller, &cart.value.cart_id, checkout_input())
        .await
        .unwrap();
    if let Some(i) = &intent {
        app.lookup.insert(
            i.intent_id.clone(),
            IntentOwner::Payment(PaymentId::parse(&receipt.value.payment_id).unwrap()),
        );
    }
    Placed {
        order_id: receipt.value.order_id,
        payment_id: receipt.value.payment_id,
        intent_id: intent.as_ref().map(|i| i.intent_id.clone()),
        client_secret: intent.map(|i| i.client_secret),
    }
}

/// A copy of an aggregate's current state.
async fn state<A: domain::EventSourced>(app: &App, id: &str) -> A {
    A::clone(&app.shop.service().load::<A>(id).await.unwrap().state)
}

pub async fn payment(app: &App, id: &str) -> Payment {
    state(app, id).await
}

pub async fn order(app: &App, id: &str) -> Order {
    state(app, id).await
}

/// Payment event types in stream order.
pub async fn payment_events(app: &App, id: &str) -> Vec<String> {
    let stream = commands::StreamRef::new(domain::StreamType::Payment, id);
    app.store
        .read(&stream, 1..=u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// Applies a verified delivery through `Payments`, as the webhook route does.
pub async fn apply(app: &App, event: &ProviderEvent) -> WebhookOutcome {
    app.payments
        .apply(event, Metadata::default())
        .await
        .unwrap()
}

/// Runs the process managers over the whole feed after `after`, like the worker does.
pub async fn drain_process_managers(app: &App, after: &mut commands::FeedCursor) {
    commands::conformance::drain_process_managers(&*app.store, &app.pms, after).await;
}

// ----- a scripted HTTP/1.1 server --------------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    pub fn form_value(&self, key: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Answers requests with a script of `(status, body)`; the last entry repeats. Records every
/// request. Stops when dropped.
pub struct ScriptedServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    pub async fn start(script: Vec<(u16, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let script = Arc::new(script);
        let (s2, n2) = (seen.clone(), notify.clone());
        let task = tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let Some(request) = read_request(&mut sock).await else {
                    continue;
                };
                let (status, body) = script
                    .get(served.min(script.len().saturating_sub(1)))
                    .cloned()
                    .unwrap_or((200, "{}".into()));
                served += 1;
                s2.lock().unwrap().push(request);
                n2.notify_waiters();
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        Self {
            url,
            seen,
            notify,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, at most `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let seen = self.requests();
            if seen.len() >= n {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}
