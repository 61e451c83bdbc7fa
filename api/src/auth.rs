//! Bearer-token authentication: HS256 with a shared secret (embedded / dev) or RS256 with keys
//! from a JWKS URL (production, for example Cognito), cached by `kid`.
//!
//! Claims: `sub`, `role` (customer | support | admin | analyst) and `exp`. A customer's `sub` is
//! their customer id.

use commands::Caller;
use domain::CustomerId;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Support,
    Admin,
    Analyst,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Support => "support",
            Role::Admin => "admin",
            Role::Analyst => "analyst",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "customer" => Some(Role::Customer),
            "support" => Some(Role::Support),
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims the backbone reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(alias = "custom:role")]
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// Set for customers: their `sub`, validated as a customer id.
    pub customer: Option<CustomerId>,
}

impl Principal {
    /// The caller as the application layer sees it.
    pub fn caller(&self) -> Caller {
        match &self.customer {
            Some(c) => Caller::Customer(c.clone()),
            None => Caller::Staff,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("no signing key for kid {0:?}")]
    UnknownKey(Option<String>),
}

/// Verifies bearer tokens.
pub struct Authenticator {
    verifier: Verifier,
}

enum Verifier {
    Hs256(DecodingKey),
    Jwks(Jwks),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let kind = match self.verifier {
            Verifier::Hs256(_) => "hs256",
            Verifier::Jwks(_) => "jwks",
        };
        f.debug_struct("Authenticator")
            .field("kind", &kind)
            .finish()
    }
}

impl Authenticator {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            verifier: Verifier::Hs256(DecodingKey::from_secret(secret)),
        }
    }

    /// RS256 with keys fetched from `url` now and again when a token names an unknown `kid`
    /// (at most once a minute).
    pub async fn jwks(url: &str, client: reqwest::Client) -> anyhow::Result<Self> {
        let jwks = Jwks {
            url: url.to_string(),
            client,
            keys: RwLock::new(JwksKeys::default()),
            last_fetch: tokio::sync::Mutex::new(None),
        };
        jwks.refresh().await?;
        Ok(Self {
            verifier: Verifier::Jwks(jwks),
        })
    }

    /// Checks signature and expiry and returns the caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = match &self.verifier {
            Verifier::Hs256(key) => decode(token, key, Algorithm::HS256)?,
            Verifier::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(e.to_string()))?;
                let key = match jwks.key(header.kid.as_deref()) {
                    Some(key) => key,
                    None => {
                        jwks.refresh_if_stale().await;
                        jwks.key(header.kid.as_deref())
                            .ok_or(AuthError::UnknownKey(header.kid.clone()))?
                    }
                };
                decode(token, &key.1, key.0)?
            }
        };
        principal(claims)
    }
}

fn decode(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })
}

fn principal(claims: Claims) -> Result<Principal, AuthError> {
    let customer = match claims.role {
        Role::Customer => Some(CustomerId::parse(&claims.sub).map_err(|_| {
            AuthError::Invalid("a customer's sub must be a valid customer id".into())
        })?),
        _ => None,
    };
    Ok(Principal {
        subject: claims.sub,
        role: claims.role,
        customer,
    })
}

/// RSA verification keys by `kid`.
#[derive(Default, Clone)]
pub struct JwksKeys {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl JwksKeys {
    /// Keeps the RSA signing keys of a key set that have a `kid`; others are skipped.
    pub fn from_set(set: &JwkSet) -> Self {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
                continue;
            }
            if let Some(usage) = &jwk.common.public_key_use {
                if *usage != jsonwebtoken::jwk::PublicKeyUse::Signature {
                    continue;
                }
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, (Algorithm::RS256, key));
                }
                Err(err) => tracing::warn!(%kid, error = %err, "unusable key in the JWKS skipped"),
            }
        }
        Self { keys }
    }

    /// The key a token's header names; with no `kid`, the only key when there is exactly one.
    pub fn select(&self, kid: Option<&str>) -> Option<&(Algorithm, DecodingKey)> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<JwksKeys>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

const JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);

impl Jwks {
    fn key(&self, kid: Option<&str>) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.select(kid).cloned()
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let mut last = self.last_fetch.lock().await;
        let set: JwkSet = self
            .client
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let keys = JwksKeys::from_set(&set);
        tracing::info!(url = %self.url, keys = keys.len(), "fetched JWKS");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *last = Some(Instant::now());
        Ok(())
    }

    async fn refresh_if_stale(&self) {
        let stale = self
            .last_fetch
            .lock()
            .await
            .is_none_or(|at| at.elapsed() >= JWKS_MIN_REFRESH);
        if stale {
            if let Err(err) = self.refresh().await {
                tracing::warn!(url = %self.url, error = %format!("{err:#}"), "JWKS refresh failed");
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints an HS256 token valid for `ttl` (what `backbone token` prints).
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now_secs();
    mint_hs256_claims(
        secret,
        &Claims {
            sub: sub.to_string(),
            role,
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
        },
    )
}

/// Mints an HS256 token with explicit claims (tests use it for expired tokens).
pub fn mint_hs256_claims(
    secret: &[u8],
    claims: &Claims,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// The file under the data directory holding the dev HS256 secret.
pub const JWT_SECRET_FILE: &str = "jwt_secret";

/// Reads the dev HS256 secret from `data_dir/jwt_secret`, creating it (32 random bytes, hex,
/// mode 0600) on first use, so that `serve` and `token` on one data directory agree.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<String> {
    load_or_create_secret_file(&data_dir.join(JWT_SECRET_FILE), "")
}

/// Reads a secret kept in `path`, creating it on first use (`prefix` + 32 random bytes in hex,
/// mode 0600). Concurrent creators agree on one value.
pub fn load_or_create_secret_file(path: &Path, prefix: &str) -> std::io::Result<String> {
    use std::io::Write;
    let path = path.to_path_buf();
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_string())
        }
        Err(e) => Err(e),
    }
}

/// Parses durations like `24h`, `30m`, `90s`, `7d` (what `backbone token --ttl` accepts).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("invalid duration unit in {s:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_RSA_PEM: &str = include_str!("testdata/jwks_test_rsa.pem");
    /// The modulus of `TEST_RSA_PEM`, base64url (generated with openssl for this test only).
    const TEST_RSA_N: &str = "y1QF2yMDsfjYqQH8tetlcITyYnRMZ2994L9yzXt4UxoSH4in_ANdDym-bKBahD0GsjDDKMCJECVErTQNlOXAs2qmuEX29fqSPqvvvL3IgGLJoCbHxm3KgHtq3O0bicVAXbZg_XIBrC4OZU-bdirhS3QastQOr0KUiWOPaVAHeSnP4wk4JR1VP_plnyobknBL0aDK1VDLEzN0uQ8LJru89ReogBvY4bXLp5LCBhiVBv1N-BErMcDrjMXs9Yp_7-UXFe22e698CO_l67UMWLraXYhv-3TN0ZjrJh8aFxI5U6Cy8yIofbe9OX-eaYeYxD0_Xsl-zmUfTCUcGghfIIVmpQ";

    fn claims(role: Role, exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            role,
            exp,
            iat: None,
        }
    }

    #[tokio::test]
    async fn an_hs256_token_round_trips_to_a_customer_principal() {
        let token =
            mint_hs256(b"s3cret", "alice", Role::Customer, Duration::from_secs(60)).unwrap();
        let p = Authenticator::hs256(b"s3cret")
            .verify(&token)
            .await
            .unwrap();
        assert_eq!(p.role, Role::Customer);
        assert_eq!(p.customer.unwrap().as_str(), "alice");
    }

    #[tokio::test]
    async fn expired_and_wrongly_signed_tokens_are_refused() {
        let expired = mint_hs256_claims(b"k", &claims(Role::Admin, now_secs() - 3600)).unwrap();
        assert!(matches!(
            Authenticator::hs256(b"k").verify(&expired).await,
            Err(AuthError::Expired)
        ));
        let other = mint_hs256(b"other", "alice", Role::Admin, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            Authenticator::hs256(b"k").verify(&other).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn jwks_key_selection_picks_the_rsa_key_named_by_kid() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [
                { "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": TEST_RSA_N, "e": "AQAB" },
                { "kty": "RSA", "kid": "enc", "use": "enc", "n": TEST_RSA_N, "e": "AQAB" },
                { "kty": "oct", "kid": "sym", "k": "c2VjcmV0" }
            ]
        }))
        .unwrap();
        let keys = JwksKeys::from_set(&set);
        assert_eq!(keys.len(), 1, "only the RSA signing key is kept");
        assert!(keys.select(Some("enc")).is_none());
        assert!(keys.select(Some("missing")).is_none());
        let (alg, key) = keys.select(Some("k1")).unwrap();

        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(Role::Support, now_secs() + 60),
            &EncodingKey::from_rsa_pem(TEST_RSA_PEM.as_bytes()).unwrap(),
        )
        .unwrap();
        let decoded = decode(&token, key, *alg).unwrap();
        assert_eq!(decoded.role, Role::Support);
        // Without a kid, the single key is used.
        assert!(keys.select(None).is_some());
    }

    #[test]
    fn the_dev_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert!(parse_ttl("1y").is_err());
    }
}
