//! Bearer-token authentication: HS256 with a shared secret (embedded / dev) or RS256 with keys
//! from a JWKS URL (production, for example Cognito), cached by `kid`.
//!
//! Claims: `sub`, `role` (customer | support | admin | analyst) and `exp`. A customer's `sub` is
//! their customer id.

use commands::Caller;
use domain::CustomerId;
use hashlink::LruCache;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock};
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
    /// The role, when the token carries it in `role` (or Cognito's `custom:role`); a provider
    /// may carry it in another claim instead ([`Authenticator::with_role_claim`]).
    #[serde(
        alias = "custom:role",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub role: Option<Role>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// OAuth scopes, space-separated; `pii` lets analysts read personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Every other claim (`nbf`, `iss`, `aud`, a provider's role claim such as `cognito:groups`).
    #[serde(flatten, default)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The claim a token's role is read from: `role` by default, or another one, for example
/// `cognito:groups`. A text claim names one role; a list claim (groups) gives the most
/// privileged role it names (admin, support, analyst, customer), and a caller in no such group
/// is a customer.
pub const DEFAULT_ROLE_CLAIM: &str = "role";

fn role_of(claims: &Claims, claim: &str) -> Result<Role, AuthError> {
    let missing = || AuthError::Invalid(format!("the token has no {claim} claim"));
    if claim == DEFAULT_ROLE_CLAIM {
        return claims.role.ok_or_else(missing);
    }
    match claims.other.get(claim) {
        Some(serde_json::Value::String(name)) => Role::parse(name)
            .ok_or_else(|| AuthError::Invalid(format!("unknown role {name:?} in {claim}"))),
        Some(serde_json::Value::Array(groups)) => {
            let named: Vec<Role> = groups
                .iter()
                .filter_map(|g| g.as_str().and_then(Role::parse))
                .collect();
            Ok([Role::Admin, Role::Support, Role::Analyst]
                .into_iter()
                .find(|r| named.contains(r))
                .unwrap_or(Role::Customer))
        }
        Some(_) => Err(AuthError::Invalid(format!(
            "{claim} is neither a text nor a list"
        ))),
        // A provider's groups claim is left out for users in no group: storefront customers.
        None if claims.role.is_none() && claim.ends_with(":groups") => Ok(Role::Customer),
        None => claims.role.ok_or_else(missing),
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// Set for customers: their `sub`, validated as a customer id.
    pub customer: Option<CustomerId>,
    /// The token's scopes.
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

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
///
/// Tokens that passed are remembered (by their exact text) for at most [`VERIFIED_TTL`] and
/// never past their `exp`, so a client sending the same token on every request pays the
/// signature check once, not per request.
pub struct Authenticator {
    verifier: Verifier,
    expect: Expect,
    role_claim: String,
    verified: Mutex<LruCache<String, (Principal, u64)>>,
}

/// Claims a token must carry beyond `sub`, `role` and `exp`.
#[derive(Debug, Clone, Default)]
struct Expect {
    issuer: Option<String>,
    audience: Option<String>,
}

/// How long a verified token is trusted without checking its signature again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_CAPACITY: usize = 10_000;
/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

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
            .field("issuer", &self.expect.issuer)
            .field("audience", &self.expect.audience)
            .finish()
    }
}

impl Authenticator {
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_verifier(Verifier::Hs256(DecodingKey::from_secret(secret)))
    }

    fn with_verifier(verifier: Verifier) -> Self {
        Self {
            verifier,
            expect: Expect::default(),
            role_claim: DEFAULT_ROLE_CLAIM.to_owned(),
            verified: Mutex::new(LruCache::new(VERIFIED_CAPACITY)),
        }
    }

    /// Reads the role from `claim` instead of `role` (see [`DEFAULT_ROLE_CLAIM`]).
    pub fn with_role_claim(mut self, claim: impl Into<String>) -> Self {
        self.role_claim = claim.into();
        self
    }

    /// Also requires the `iss` claim to equal `issuer` and the `aud` claim to contain
    /// `audience`, for each that is given (for a JWKS provider, its issuer URL and this API's
    /// client id or audience).
    pub fn expecting(mut self, issuer: Option<String>, audience: Option<String>) -> Self {
        self.expect = Expect { issuer, audience };
        self
    }

    /// The `iss` tokens must carry, when configured: the OpenID provider the console offers
    /// to sign in with.
    pub fn issuer(&self) -> Option<&str> {
        self.expect.issuer.as_deref()
    }

    /// The `aud` tokens must carry, when configured: the console's OAuth client id.
    pub fn audience(&self) -> Option<&str> {
        self.expect.audience.as_deref()
    }

    /// RS256 with keys fetched from `url` now, again once the key set's `max-age` has passed,
    /// and when a token names an unknown `kid`; never more often than once a minute.
    pub async fn jwks(url: &str, client: reqwest::Client) -> anyhow::Result<Self> {
        Self::jwks_with(url, client, JwksPolicy::default()).await
    }

    /// [`jwks`](Self::jwks) with its refresh policy.
    pub async fn jwks_with(
        url: &str,
        client: reqwest::Client,
        policy: JwksPolicy,
    ) -> anyhow::Result<Self> {
        let jwks = Jwks {
            url: url.to_string(),
            client,
            keys: RwLock::new(JwksKeys::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            fresh_until: Mutex::new(None),
            policy,
        };
        jwks.refresh().await?;
        Ok(Self::with_verifier(Verifier::Jwks(jwks)))
    }

    /// Checks signature, expiry (and issuer and audience when configured) and returns the
    /// caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = unix_now();
        if let Some(principal) = self.remembered(token, now) {
            return Ok(principal);
        }
        let claims = self.check(token).await?;
        let exp = claims.exp;
        let role = role_of(&claims, &self.role_claim)?;
        let principal = principal(claims, role)?;
        let until = exp
            .saturating_add(LEEWAY_SECS)
            .min(now.saturating_add(VERIFIED_TTL.as_secs()));
        self.lock_verified()
            .insert(token.to_string(), (principal.clone(), until));
        Ok(principal)
    }

    /// The principal of a token verified before and still remembered; `None` means "call
    /// [`Authenticator::verify`]", not "refused". Never waits.
    pub fn remembered_now(&self, token: &str) -> Option<Principal> {
        self.remembered(token, unix_now())
    }

    fn lock_verified(&self) -> MutexGuard<'_, LruCache<String, (Principal, u64)>> {
        // Plain cache: a panic elsewhere cannot leave an entry half-written.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remembered(&self, token: &str, now: u64) -> Option<Principal> {
        let mut verified = self.lock_verified();
        match verified.get(token) {
            Some((principal, until)) if now < *until => Some(principal.clone()),
            Some(_) => {
                verified.remove(token);
                None
            }
            None => None,
        }
    }

    async fn check(&self, token: &str) -> Result<Claims, AuthError> {
        let expect = &self.expect;
        Ok(match &self.verifier {
            Verifier::Hs256(key) => decode(token, key, Algorithm::HS256, expect)?,
            Verifier::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(e.to_string()))?;
                if jwks.expired() {
                    jwks.refresh_if_stale().await;
                }
                let key = match jwks.key(header.kid.as_deref()) {
                    Some(key) => key,
                    None => {
                        jwks.refresh_if_stale().await;
                        jwks.key(header.kid.as_deref())
                            .ok_or(AuthError::UnknownKey(header.kid.clone()))?
                    }
                };
                decode(token, &key.1, key.0, expect)?
            }
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decode(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    expect: &Expect,
) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(alg);
    let mut required = vec!["exp", "sub"];
    match &expect.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &expect.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
    // Clock skew is bounded both ways: a token issued later than now (past the leeway) is
    // refused like one that expired.
    if claims
        .iat
        .is_some_and(|iat| iat > now_secs().saturating_add(LEEWAY_SECS))
    {
        return Err(AuthError::Invalid(
            "the token was issued in the future".into(),
        ));
    }
    Ok(claims)
}

fn principal(claims: Claims, role: Role) -> Result<Principal, AuthError> {
    let customer = match role {
        Role::Customer => Some(CustomerId::parse(&claims.sub).map_err(|_| {
            AuthError::Invalid("a customer's sub must be a valid customer id".into())
        })?),
        _ => None,
    };
    Ok(Principal {
        subject: claims.sub,
        role,
        customer,
        scopes: claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
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

/// When a key set is fetched again.
#[derive(Debug, Clone, Copy)]
pub struct JwksPolicy {
    /// The least time between two fetches, whatever asks for one.
    pub min_refresh: Duration,
    /// How long a key set without `Cache-Control: max-age` stays fresh.
    pub default_max_age: Duration,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(60),
            default_max_age: Duration::from_secs(3600),
        }
    }
}

struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<JwksKeys>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Until when the fetched key set is fresh (its `max-age`).
    fresh_until: Mutex<Option<Instant>>,
    policy: JwksPolicy,
}

/// The `max-age` of a `Cache-Control` header.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|n| n.trim().parse().ok())
        .map(Duration::from_secs)
}

impl Jwks {
    fn key(&self, kid: Option<&str>) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.select(kid).cloned()
    }

    /// Whether the key set's `max-age` has passed.
    fn expired(&self) -> bool {
        self.fresh_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|until| Instant::now() >= until)
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        let answer = self
            .client
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?;
        let age = max_age(answer.headers()).unwrap_or(self.policy.default_max_age);
        let set: JwkSet = answer.json().await?;
        let keys = JwksKeys::from_set(&set);
        tracing::info!(url = %self.url, keys = keys.len(), max_age_secs = age.as_secs(), "fetched JWKS");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.fresh_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + age);
        Ok(())
    }

    async fn refresh_if_stale(&self) {
        let stale = self
            .last_fetch
            .lock()
            .await
            .is_none_or(|at| at.elapsed() >= self.policy.min_refresh);
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
    mint_hs256_scoped(secret, sub, role, None, ttl)
}

/// [`mint_hs256`] with OAuth scopes (space-separated), for example `pii`.
pub fn mint_hs256_scoped(
    secret: &[u8],
    sub: &str,
    role: Role,
    scope: Option<&str>,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now_secs();
    mint_hs256_claims(
        secret,
        &Claims {
            sub: sub.to_string(),
            role: Some(role),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            scope: scope.map(str::to_owned),
            other: serde_json::Map::new(),
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
    const TEST_RSA_N: &str = include_str!("testdata/jwks_test_rsa.n");

    fn claims(role: Role, exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            role: Some(role),
            exp,
            iat: None,
            scope: None,
            other: serde_json::Map::new(),
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
        let decoded = decode(&token, key, *alg, &Expect::default()).unwrap();
        assert_eq!(decoded.role, Some(Role::Support));
        // Without a kid, the single key is used.
        assert!(keys.select(None).is_some());
    }

    fn signed(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let auth = Authenticator::hs256(b"k").expecting(
            Some("https://issuer.example".into()),
            Some("backbone".into()),
        );
        let exp = now_secs() + 60;
        let base = serde_json::json!({"sub": "ops", "role": "support", "exp": exp});
        let with = |extra: serde_json::Value| {
            let mut c = base.clone();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            signed(b"k", c)
        };
        let good =
            with(serde_json::json!({"iss": "https://issuer.example", "aud": ["backbone", "x"]}));
        assert_eq!(auth.verify(&good).await.unwrap().role, Role::Support);
        for bad in [
            with(serde_json::json!({})),
            with(serde_json::json!({"aud": "backbone"})),
            with(serde_json::json!({"iss": "https://issuer.example"})),
            with(serde_json::json!({"iss": "https://evil.example", "aud": "backbone"})),
            with(serde_json::json!({"iss": "https://issuer.example", "aud": "other"})),
        ] {
            assert!(
                matches!(auth.verify(&bad).await, Err(AuthError::Invalid(_))),
                "accepted {bad}"
            );
        }
        // Without expectations, iss and aud are not required (and any aud is accepted).
        let plain = Authenticator::hs256(b"k");
        assert!(plain.verify(&signed(b"k", base.clone())).await.is_ok());
        assert!(plain
            .verify(&with(serde_json::json!({"aud": "whatever"})))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn verified_tokens_are_remembered_until_they_expire() {
        let auth = Authenticator::hs256(b"k");
        let exp = now_secs() + 60;
        let token = mint_hs256_claims(b"k", &claims(Role::Admin, exp)).unwrap();
        let first = auth.verify(&token).await.unwrap();
        let now = unix_now();
        assert_eq!(auth.remembered(&token, now), Some(first.clone()));
        assert_eq!(auth.verify(&token).await.unwrap(), first);
        // Never past exp (plus the leeway), whatever the cache's own lifetime.
        assert_eq!(auth.remembered(&token, exp + LEEWAY_SECS), None);
        assert_eq!(
            auth.remembered(&token, now),
            None,
            "the stale entry is dropped"
        );
        // A tampered token is not a cache hit.
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(auth.verify(&tampered).await.is_err());
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
