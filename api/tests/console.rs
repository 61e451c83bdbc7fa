//! The staff console in a real browser: a `backbone serve` and a headless Chromium driven over
//! WebDriver (chromedriver, and Python's selenium from the test venv running
//! `tests/console/walk.py`). It walks support's search, timeline and refund and an admin's
//! rebuild, checks that a customer gets no console, that an order whose shipping name is a
//! `<script>` shows it as text, and saves a screenshot of each page to
//! `target/console-screenshots/`. Without the browser (Debian's `chromium` and `chromium-driver`,
//! which `scripts/test.sh` installs) or selenium, it fails saying so.

#[path = "../../infrastructure/tests/support/moto.rs"]
mod moto;
#[path = "support/process.rs"]
mod process;

use api::auth::{mint_hs256, Role};
use process::{until_ok, Process};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "console-test-secret";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The shipping name that must render as text.
const SCRIPT_NAME: &str = "<script>alert(1)</script>";

fn token(sub: &str, role: Role) -> String {
    mint_hs256(SECRET.as_bytes(), sub, role, Duration::from_secs(900)).expect("token")
}

/// chromedriver on a port of its choosing, stopped when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does)"
        );
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = out.lines().map_while(Result::ok);
        let port = lines
            .find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .map(|rest| rest.trim_end_matches('.').to_owned())
            })
            .expect("chromedriver names its port");
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON API call; panics on anything but a 2xx.
async fn call(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method.clone(), url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status();
    let text = answer.text().await.expect("body");
    assert!(status.is_success(), "{method} {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Places and pays an order whose shipping name is [`SCRIPT_NAME`]; its id once support sees it
/// paid.
async fn place_paid_order(base: &str, customer: &str, support: &str) -> String {
    let post = reqwest::Method::POST;
    let cart = call(
        post.clone(),
        &format!("{base}/v1/carts"),
        customer,
        Some(json!({})),
    )
    .await;
    let cart = cart["cart_id"].as_str().expect("cart id");
    call(
        post.clone(),
        &format!("{base}/v1/carts/{cart}/items"),
        customer,
        Some(json!({"product_id": "prd_espresso", "quantity": 2})),
    )
    .await;
    let placed = call(
        post.clone(),
        &format!("{base}/v1/carts/{cart}/checkout"),
        customer,
        Some(json!({"email": "mallory@example.com", "shipping_address": {
            "name": SCRIPT_NAME, "line1": "1 Rabbit Hole", "city": "Oxford",
            "postal_code": "OX1 1AA", "country": "GB"}})),
    )
    .await;
    let order = placed["order_id"].as_str().expect("order id").to_owned();
    let payment = placed["payment_id"].as_str().expect("payment id");
    call(
        post,
        &format!("{base}/v1/payments/{payment}/confirm"),
        customer,
        Some(json!({"payment_method": "pm_card_visa"})),
    )
    .await;
    for _ in 0..100 {
        let found = call(
            reqwest::Method::GET,
            &format!("{base}/v1/support/orders?order_id={order}"),
            support,
            None,
        )
        .await;
        if found["orders"][0]["status"] == "paid" {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {order} never became paid");
}

/// Runs `tests/console/walk.py` with `args` in headless Chromium against the server at `base`,
/// and asserts that it passed and saved the screenshots named `pages` (removed first: a
/// screenshot left by an earlier run proves nothing).
fn walk(server: &Process, base: &str, args: &[&str], env: &[(&str, String)], pages: &[&str]) {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let shot = |page: &str| shots.join(format!("{page}.png"));
    for page in pages {
        let _ = std::fs::remove_file(shot(page));
    }
    let driver = Chromedriver::start();
    let started = std::time::Instant::now();
    // The test venv's Python (scripts/test.sh sets BACKBONE_VENV), else the one on PATH.
    let python = std::env::var("BACKBONE_VENV")
        .map(|venv| format!("{venv}/bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let walked = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/walk.py"))
        .args(args)
        .env("CONSOLE_BASE", base)
        .env("CHROMEDRIVER_URL", &driver.url)
        .env("SCREENSHOTS", &shots)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("run {python} (the test venv, with selenium): {e}"));
    drop(driver);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&walked.stdout),
        String::from_utf8_lossy(&walked.stderr)
    );
    eprintln!("browser walk {args:?} ({:.1?}):\n{said}", started.elapsed());
    assert!(
        walked.status.success(),
        "the browser walk failed:\n{said}\nserver log:\n{}",
        server.logs()
    );
    for page in pages {
        assert!(
            std::fs::metadata(shot(page)).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            shot(page).display()
        );
    }
}

/// `backbone serve` with `flags`, ready, and its address.
async fn serve(data: &Path, flags: &[&str]) -> (Process, String) {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(flags);
    let server = Process::spawn(&args);
    let base = server.address("serving the HTTP API");
    until_ok(&format!("{base}/readyz")).await;
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_admin_and_analyst_walk_the_console_in_a_real_browser() {
    let data = tempfile::tempdir().expect("data dir");
    let (server, base) = serve(data.path(), &["--jwt-secret", SECRET]).await;
    let (customer, support) = (token("alice", Role::Customer), token("sam", Role::Support));
    let order = place_paid_order(&base, &customer, &support).await;

    // A form posted without its CSRF token (or with a forged one) is refused, and does nothing.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let refund_form = format!("{base}/console/support/orders/{order}/refunds");
    for body in ["amount=1.00", "amount=1.00&csrf=00ff"] {
        let answer = client
            .post(&refund_form)
            .header("cookie", format!("console_session={support}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 403, "{body}");
        assert!(answer
            .text()
            .await
            .expect("body")
            .contains("CSRF check failed"));
    }
    // Each page is for the roles the API gives its data to; a customer's token opens none.
    let admin = token("ops", Role::Admin);
    let analyst = token("ana", Role::Analyst);
    let roles = [
        ("customer", &customer),
        ("support", &support),
        ("admin", &admin),
        ("analyst", &analyst),
    ];
    let pages: [(&str, &[&str]); 7] = [
        ("/console", &["support", "admin", "analyst"]),
        ("/console/support/orders", &["support", "admin"]),
        ("/console/support/notifications", &["support", "admin"]),
        ("/console/admin/catalog", &["admin"]),
        ("/console/admin/projections", &["admin"]),
        ("/console/analyst/events", &["analyst"]),
        ("/console/analyst/streams", &["analyst"]),
    ];
    for (page, allowed) in pages {
        for (role, token) in roles {
            let answer = client
                .get(format!("{base}{page}"))
                .header("cookie", format!("console_session={token}"))
                .send()
                .await
                .expect("get");
            let expected = if allowed.contains(&role) { 200 } else { 403 };
            assert_eq!(answer.status(), expected, "{role} on {page}");
            assert!(
                answer.headers()["content-type"]
                    .to_str()
                    .is_ok_and(|t| t.starts_with("text/html")),
                "{role} on {page}: an HTML page"
            );
        }
    }
    let without_session = |page: &str| client.get(format!("{base}{page}")).send();
    // An unknown console page is an HTML page too.
    let answer = without_session("/console/no-such-page").await.expect("get");
    assert_eq!(answer.status(), 404);
    assert!(answer.text().await.expect("body").contains("Nothing here."));
    // Without a session, the console sends the browser to sign in.
    let answer = without_session("/console/support/orders")
        .await
        .expect("get");
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/console/sign-in");

    walk(
        &server,
        &base,
        &[],
        &[
            ("ORDER_ID", order.clone()),
            ("SCRIPT_NAME", SCRIPT_NAME.to_owned()),
            ("CUSTOMER_TOKEN", customer),
            ("SUPPORT_TOKEN", support.clone()),
            ("ADMIN_TOKEN", admin),
            ("ANALYST_TOKEN", analyst),
        ],
        &[
            "customer-refused",
            "support-search",
            "support-timeline",
            "support-refund",
            "support-failed-notifications",
            "admin-projections",
            "admin-catalog",
            "admin-product",
            "analyst-events",
            "analyst-time-travel",
        ],
    );

    // The refund form was sent once by the browser: the order is refunded once, in full.
    let seen = call(
        reqwest::Method::GET,
        &format!("{base}/v1/orders/{order}"),
        &support,
        None,
    )
    .await;
    assert_eq!(seen["refunded"], seen["total"], "{seen}");
    assert!(server.stop().success());
}

/// A tiny OpenID provider on 127.0.0.1:0: discovery, JWKS, an authorization endpoint that signs
/// in `sam` (support) at once, and a token endpoint that checks the PKCE verifier.
mod provider {
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    pub const CLIENT_ID: &str = "backbone-console";
    const KEY_PEM: &str = include_str!("../src/testdata/jwks_test_rsa.pem");
    const KEY_N: &str = include_str!("../src/testdata/jwks_test_rsa.n");

    #[derive(Clone)]
    struct Provider {
        issuer: String,
        /// Issued codes: their PKCE challenge and redirect URI.
        codes: Arc<Mutex<HashMap<String, (String, String)>>>,
    }

    /// Starts the provider; its issuer URL.
    pub async fn start() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("address"));
        let provider = Provider {
            issuer: issuer.clone(),
            codes: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(provider);
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    async fn discovery(State(p): State<Provider>) -> Json<Value> {
        Json(json!({
            "issuer": p.issuer,
            "authorization_endpoint": format!("{}/authorize", p.issuer),
            "token_endpoint": format!("{}/token", p.issuer),
            "jwks_uri": format!("{}/jwks", p.issuer),
        }))
    }

    async fn jwks() -> Json<Value> {
        Json(
            json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
            "n": KEY_N.trim(), "e": "AQAB"}]}),
        )
    }

    async fn authorize(
        State(p): State<Provider>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let param = |k: &str| q.get(k).cloned().unwrap_or_default();
        if param("response_type") != "code"
            || param("client_id") != CLIENT_ID
            || param("code_challenge_method") != "S256"
            || param("code_challenge").is_empty()
            || param("state").is_empty()
        {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad authorization request {q:?}"),
            )
                .into_response();
        }
        let code = uuid::Uuid::new_v4().to_string();
        p.codes.lock().unwrap().insert(
            code.clone(),
            (param("code_challenge"), param("redirect_uri")),
        );
        let to = format!(
            "{}?code={code}&state={}",
            param("redirect_uri"),
            param("state")
        );
        Redirect::to(&to).into_response()
    }

    /// A token of this provider for `sub` in `role`, as the server expects it (with `aud`).
    pub fn id_token(issuer: &str, sub: &str, role: &str) -> String {
        let exp = chrono::Utc::now().timestamp() + 900;
        signed(json!({"sub": sub, "role": role, "exp": exp, "iss": issuer, "aud": CLIENT_ID}))
    }

    fn signed(claims: Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        let key = EncodingKey::from_rsa_pem(KEY_PEM.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }

    async fn token(State(p): State<Provider>, body: String) -> Response {
        let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        let Some((challenge, redirect_uri)) = p.codes.lock().unwrap().remove(&field("code")) else {
            return (StatusCode::BAD_REQUEST, "unknown code").into_response();
        };
        let verified = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
        if field("grant_type") != "authorization_code"
            || field("client_id") != CLIENT_ID
            || field("redirect_uri") != redirect_uri
            || verified != challenge
        {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad token request {form:?}"),
            )
                .into_response();
        }
        let exp = chrono::Utc::now().timestamp() + 600;
        // Like Cognito's: the access token names no audience (the server refuses it), the ID
        // token does (the console keeps that one).
        let access = signed(json!({"sub": "sam", "role": "support", "exp": exp, "iss": p.issuer}));
        let id = id_token(&p.issuer, "sam", "support");
        Json(json!({"access_token": access, "id_token": id, "token_type": "Bearer"}))
            .into_response()
    }
}

/// Support signs in through the provider, and resends a notification that could not be
/// delivered (the SMTP server is unreachable and one attempt is allowed, so every notification
/// fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_member_signs_in_through_the_openid_provider_and_resends_a_notification() {
    let issuer = provider::start().await;
    let data = tempfile::tempdir().expect("data dir");
    let jwks = format!("{issuer}/jwks");
    // A port nothing listens on: the SMTP connection is refused.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let smtp = format!("smtp://{unreachable}");
    let (server, base) = serve(
        data.path(),
        &[
            "--jwks-url",
            &jwks,
            "--jwt-issuer",
            &issuer,
            "--jwt-audience",
            provider::CLIENT_ID,
            "--notify",
            "smtp",
            "--smtp-url",
            &smtp,
            "--notify-attempts",
            "1",
        ],
    )
    .await;
    let support = provider::id_token(&issuer, "sam", "support");
    let customer = provider::id_token(&issuer, "alice", "customer");
    let order = place_paid_order(&base, &customer, &support).await;
    let failed = format!("{base}/v1/support/notifications/failed");
    let mut given_up = Value::Null;
    for _ in 0..100 {
        given_up = call(reqwest::Method::GET, &failed, &support, None).await;
        if given_up["notifications"][0]["order_id"] == order.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let notification = given_up["notifications"][0]["notification_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the confirmation never failed: {given_up}"))
        .to_owned();
    walk(
        &server,
        &base,
        &["oidc"],
        &[
            ("ISSUER", issuer.clone()),
            ("ORDER_ID", order),
            ("NOTIFICATION_ID", notification),
        ],
        &["oidc-sign-in", "oidc-signed-in", "support-resend"],
    );
    assert!(server.stop().success());
}
