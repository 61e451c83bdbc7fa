//! Identities from a real provider, against a JWKS server the test starts: keys are fetched at
//! start, again when a token names an unknown `kid` (at most once per refresh interval) and
//! once the key set's `max-age` has passed, so a key rotated in works at once and a key rotated
//! out stops working; roles come from Cognito's `cognito:groups`; issuer, audience, expiry and
//! clock skew are checked.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use backbone_tests::{spawn_app_configured, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY_A: &str = include_str!("../../api/src/testdata/jwks_test_rsa.pem");
const N_A: &str = include_str!("../../api/src/testdata/jwks_test_rsa.n");
const KEY_B: &str = include_str!("../../api/src/testdata/jwks_test_rsa_2.pem");
const N_B: &str = include_str!("../../api/src/testdata/jwks_test_rsa_2.n");
const ISSUER: &str = "https://idp.test/pool-1";
const AUDIENCE: &str = "backbone-api";
/// The key set's `Cache-Control: max-age`, in seconds.
const MAX_AGE: u64 = 1;

/// The provider's published key set and how often it was fetched.
#[derive(Clone, Default)]
struct Provider {
    kids: Arc<Mutex<Vec<&'static str>>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    fn publish(&self, kids: &[&'static str]) {
        *self.kids.lock().unwrap() = kids.to_vec();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn jwks(State(provider): State<Provider>) -> impl IntoResponse {
    provider.fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = provider
        .kids
        .lock()
        .unwrap()
        .iter()
        .map(|kid| {
            let n = if *kid == "key-a" { N_A } else { N_B };
            json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n.trim(), "e": "AQAB" })
        })
        .collect();
    (
        [(CACHE_CONTROL, format!("public, max-age={MAX_AGE}"))],
        Json(json!({ "keys": keys })),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An RS256 token signed by `kid`'s key, with `claims` over sensible defaults.
fn token(kid: &str, claims: Value) -> String {
    let pem = if kid == "key-b" { KEY_B } else { KEY_A };
    let mut all = json!({
        "sub": "sam", "iss": ISSUER, "aud": AUDIENCE,
        "iat": now(), "exp": now() + 600,
        // Every token distinct, so none is answered from the verified-token memory.
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    for (k, v) in claims.as_object().expect("claims object") {
        all[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &all,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).expect("pem"),
    )
    .expect("sign")
}

async fn status(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.get(path, token).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_a_jwks_provider_with_rotation_groups_and_bounded_skew() {
    let provider = Provider::default();
    provider.publish(&["key-a"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(
            listener,
            axum::Router::new()
                .route("/jwks.json", get(jwks))
                .with_state(provider.clone()),
        )
        .into_future(),
    );

    let app = spawn_app_configured(tempfile::tempdir().expect("temp dir"), |c| {
        c.api.jwks_url = Some(url.clone());
        c.api.jwt_issuer = Some(ISSUER.to_owned());
        c.api.jwt_audience = Some(AUDIENCE.to_owned());
        c.api.role_claim = "cognito:groups".to_owned();
        c.api.jwks_min_refresh = Duration::from_millis(300);
    })
    .await;
    assert_eq!(provider.fetches(), 1, "fetched at start");

    // Roles from the groups: the most privileged group that names a role; none is a customer.
    let support = token(
        "key-a",
        json!({ "cognito:groups": ["support", "beta-testers"] }),
    );
    assert_eq!(
        status(&app, "/v1/support/orders", &support).await,
        StatusCode::OK
    );
    let admin = token("key-a", json!({ "cognito:groups": ["support", "admin"] }));
    assert_eq!(
        status(&app, "/v1/admin/projections", &admin).await,
        StatusCode::OK
    );
    let customer = token("key-a", json!({ "sub": "cust-7" }));
    assert_eq!(status(&app, "/v1/orders", &customer).await, StatusCode::OK);
    assert_eq!(
        status(&app, "/v1/support/orders", &customer).await,
        StatusCode::FORBIDDEN
    );

    // Issuer, audience, expiry and clock skew (a few seconds of leeway, no more).
    for (claims, why) in [
        (json!({ "iss": "https://evil.test" }), "another issuer"),
        (json!({ "aud": "another-api" }), "another audience"),
        (json!({ "exp": now() - 60 }), "expired"),
        (json!({ "nbf": now() + 3600 }), "not valid yet"),
        (json!({ "iat": now() + 3600 }), "issued in the future"),
    ] {
        let mut claims = claims;
        claims["cognito:groups"] = json!(["support"]);
        let refused = token("key-a", claims);
        assert_eq!(
            status(&app, "/v1/support/orders", &refused).await,
            StatusCode::UNAUTHORIZED,
            "{why}"
        );
    }
    let skewed = token(
        "key-a",
        json!({ "cognito:groups": ["support"], "iat": now() + 3 }),
    );
    assert_eq!(
        status(&app, "/v1/support/orders", &skewed).await,
        StatusCode::OK,
        "within the leeway"
    );

    // Rotation: a new key is published beside the old one; a token signed with it names an
    // unknown kid, which fetches the set again at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    provider.publish(&["key-a", "key-b"]);
    let before = provider.fetches();
    let rotated = token("key-b", json!({ "cognito:groups": ["support"] }));
    assert_eq!(
        status(&app, "/v1/support/orders", &rotated).await,
        StatusCode::OK
    );
    assert_eq!(provider.fetches(), before + 1);

    // Unknown kids cannot make the server hammer the provider: one fetch per interval.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = provider.fetches();
    for _ in 0..5 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("nobody".to_owned());
        let unknown = jsonwebtoken::encode(
            &header,
            &json!({ "sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60 }),
            &EncodingKey::from_rsa_pem(KEY_A.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            status(&app, "/v1/orders", &unknown).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        provider.fetches(),
        before + 1,
        "one fetch for five unknown kids"
    );

    // The old key is withdrawn. Once the set's max-age has passed it is fetched again, and
    // a token signed with the old key is refused from then on.
    provider.publish(&["key-b"]);
    tokio::time::sleep(Duration::from_millis(MAX_AGE * 1000 + 400)).await;
    let old = token("key-a", json!({ "cognito:groups": ["support"] }));
    assert_eq!(
        status(&app, "/v1/support/orders", &old).await,
        StatusCode::UNAUTHORIZED
    );
    let current = token("key-b", json!({ "cognito:groups": ["support"] }));
    assert_eq!(
        status(&app, "/v1/support/orders", &current).await,
        StatusCode::OK
    );

    app.shutdown().await;
    server.abort();
}
