//! The Stripe payment gateway: PaymentIntents and refunds over Stripe's REST API, behind the
//! [`PaymentGateway`] port.
//!
//! - Plain `reqwest` with form bodies and lenient response types: only the fields we read are
//!   declared, so old-style objects (localstripe) and newer API versions both work.
//! - The base URL is configurable (tests point it at localstripe or a fake).
//! - Every POST carries an `Idempotency-Key`: the payment id for intents, a key derived from
//!   the refund request for refunds. A retry therefore never creates a second intent or refund
//!   at Stripe (localstripe ignores the header; Stripe honours it for 24 h). The one GET
//!   retrieves an intent for its client secret, which the backbone never stores.
//! - Connect errors, timeouts, 409 (a concurrent request with the same key), 429 and 5xx are
//!   [`GatewayError::Transient`] and retried here a few times with jittered exponential backoff;
//!   other 4xx are [`GatewayError::Rejected`]. When retries run out the caller gets `Transient`
//!   (checkout then leaves the payment to the retry worker).
//! - The secret key is only ever put in the `Authorization` header; it is redacted from `Debug`
//!   and never logged.

use async_trait::async_trait;
use commands::{
    CancelIntent, ConfirmIntent, CreateIntent, CreatedIntent, GatewayError, IntentStatus,
    PaymentGateway, RefundRequest, RefundResult,
};
use domain::{Currency, Money};
use rand::Rng;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Stripe's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// A Stripe secret key (`sk_...` or `rk_...`). Its `Debug` never shows the value.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Configuration of [`StripeGateway`]. Built by the composition root (from `STRIPE_SECRET_KEY`
/// and friends); the adapter reads no environment itself.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: SecretKey,
    /// Without a trailing slash, for example `https://api.stripe.com` or
    /// `http://127.0.0.1:8420` for localstripe.
    pub base_url: String,
    /// Attempts per call, including the first (at least 1).
    pub max_attempts: u32,
    /// Base delay of the jittered exponential backoff between attempts.
    pub backoff_base: Duration,
    /// Most time one attempt may take, connection included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl StripeConfig {
    pub fn new(secret_key: SecretKey) -> Self {
        Self {
            secret_key,
            base_url: DEFAULT_BASE_URL.to_string(),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_string();
        self
    }
}

/// The gateway adapter. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct StripeGateway {
    config: StripeConfig,
    http: reqwest::Client,
}

/// Errors building the adapter.
#[derive(Debug, thiserror::Error)]
pub enum StripeConfigError {
    #[error("stripe base url must start with http:// or https://")]
    BadBaseUrl,
    #[error("cannot build the http client: {0}")]
    Client(String),
}

#[derive(Deserialize)]
struct IntentResponse {
    id: String,
    client_secret: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct RefundResponse {
    id: String,
    status: Option<String>,
    amount: Option<i64>,
    currency: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl StripeGateway {
    pub fn new(mut config: StripeConfig) -> Result<Self, StripeConfigError> {
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(StripeConfigError::BadBaseUrl);
        }
        config.max_attempts = config.max_attempts.max(1);
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("order-backbone/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeConfigError::Client(e.to_string()))?;
        Ok(Self { config, http })
    }

    pub fn base_url(&self) -> &str {
        &self.config.base_url
    }

    /// POSTs a form to `path` with an idempotency key, retrying transient failures.
    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(&str, String)],
    ) -> Result<T, GatewayError> {
        let url = format!("{}{path}", self.config.base_url);
        self.with_retries(path, || {
            self.http
                .post(&url)
                .header("Idempotency-Key", idempotency_key)
                .form(form)
        })
        .await
    }

    /// GETs `path`, retrying transient failures (a read needs no idempotency key).
    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, GatewayError> {
        let url = format!("{}{path}", self.config.base_url);
        self.with_retries(path, || self.http.get(&url)).await
    }

    /// Sends the request `build` makes, authenticated, again after each transient failure
    /// until `max_attempts`.
    async fn with_retries<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, GatewayError> {
        let mut attempt = 1;
        loop {
            match self.send_once(path, build()).await {
                Ok(v) => return Ok(v),
                Err(GatewayError::Transient(reason)) if attempt < self.config.max_attempts => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(path, attempt, %reason, wait_ms = wait.as_millis() as u64, "stripe request failed, retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.backoff_base.as_millis() as u64;
        let cap = base.saturating_mul(1u64 << attempt.min(10));
        let jitter = rand::rng().random_range(0..=cap.max(1) / 2);
        Duration::from_millis(cap / 2 + jitter)
    }

    async fn send_once<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, GatewayError> {
        let response = request
            .bearer_auth(&self.config.secret_key.0)
            .send()
            .await
            .map_err(|e| GatewayError::Transient(describe(e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| GatewayError::Transient(describe(e)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                GatewayError::Rejected(format!("unreadable stripe response from {path}: {e}"))
            });
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.error)
            .unwrap_or_default();
        let reason = format!(
            "stripe answered {} on {path}: {} {} {}",
            status.as_u16(),
            detail.kind.as_deref().unwrap_or("-"),
            detail.code.as_deref().unwrap_or("-"),
            detail.message.as_deref().unwrap_or("-"),
        );
        let code = status.as_u16();
        if code == 409 || code == 429 || status.is_server_error() {
            Err(GatewayError::Transient(reason))
        } else {
            Err(GatewayError::Rejected(reason))
        }
    }
}

/// A transport error without its URL (which is harmless, but noisy).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request error"
    };
    format!("{kind}: {}", e.without_url())
}

/// Stripe's lowercase currency code.
fn stripe_currency(money: &Money) -> String {
    money.currency().code().to_ascii_lowercase()
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    #[tracing::instrument(skip_all, fields(payment_id = %request.payment_id, order_id = %request.order_id), err)]
    async fn create_intent(&self, request: CreateIntent) -> Result<CreatedIntent, GatewayError> {
        let form = [
            ("amount", request.amount.to_minor().to_string()),
            ("currency", stripe_currency(&request.amount)),
            ("metadata[order_id]", request.order_id.to_string()),
            ("metadata[payment_id]", request.payment_id.to_string()),
        ];
        // Not confirmed here: the storefront confirms with the client secret (Stripe.js).
        let intent: IntentResponse = self
            .post("/v1/payment_intents", &request.idempotency_key, &form)
            .await?;
        let client_secret = intent
            .client_secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                GatewayError::Rejected("payment intent without a client secret".into())
            })?;
        tracing::info!(intent_id = %intent.id, "payment intent created");
        Ok(CreatedIntent {
            intent_id: intent.id,
            client_secret,
        })
    }

    /// Retrieves the intent (`GET /v1/payment_intents/{id}`): with a secret key, Stripe's answer
    /// carries the client secret.
    #[tracing::instrument(skip_all, fields(intent_id = %intent_id), err)]
    async fn client_secret(&self, intent_id: &str) -> Result<String, GatewayError> {
        let intent: IntentResponse = self
            .get(&format!("/v1/payment_intents/{intent_id}"))
            .await?;
        intent
            .client_secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GatewayError::Rejected("payment intent without a client secret".into()))
    }

    #[tracing::instrument(skip_all, fields(intent_id = %request.intent_id), err)]
    async fn confirm_intent(&self, request: ConfirmIntent) -> Result<IntentStatus, GatewayError> {
        // Attached first, then confirmed: two requests Stripe accepts, and the only form
        // localstripe implements (its confirm refuses a `payment_method`).
        let intent_path = format!("/v1/payment_intents/{}", request.intent_id);
        let attach = [("payment_method", request.payment_method.clone())];
        let attach_key = format!("{}:attach", request.idempotency_key);
        let _: IntentResponse = self.post(&intent_path, &attach_key, &attach).await?;
        let confirm_path = format!("{intent_path}/confirm");
        let intent: IntentResponse = self
            .post(&confirm_path, &request.idempotency_key, &[])
            .await?;
        let status = intent.status.unwrap_or_else(|| "processing".into());
        tracing::info!(intent_id = %intent.id, %status, "payment intent confirmed at the provider");
        Ok(IntentStatus {
            intent_id: intent.id,
            status,
        })
    }

    #[tracing::instrument(skip_all, fields(intent_id = %request.intent_id), err)]
    async fn cancel_intent(&self, request: CancelIntent) -> Result<IntentStatus, GatewayError> {
        let path = format!("/v1/payment_intents/{}/cancel", request.intent_id);
        // No `cancellation_reason` (`abandoned` would fit): localstripe refuses every value.
        let intent: IntentResponse = self.post(&path, &request.idempotency_key, &[]).await?;
        let status = intent.status.unwrap_or_else(|| "canceled".into());
        tracing::info!(intent_id = %intent.id, %status, "payment intent canceled at the provider");
        Ok(IntentStatus {
            intent_id: intent.id,
            status,
        })
    }

    #[tracing::instrument(skip_all, fields(payment_id = %request.payment_id, intent_id = %request.intent_id), err)]
    async fn refund(&self, request: RefundRequest) -> Result<RefundResult, GatewayError> {
        let form = [
            ("payment_intent", request.intent_id.clone()),
            ("amount", request.amount.to_minor().to_string()),
            ("metadata[order_id]", request.order_id.to_string()),
            ("metadata[payment_id]", request.payment_id.to_string()),
        ];
        let refund: RefundResponse = self
            .post("/v1/refunds", &request.idempotency_key, &form)
            .await?;
        // The answer's amount and currency when given; otherwise what we asked for.
        let amount = match (refund.amount, refund.currency.as_deref()) {
            (Some(minor), Some(code)) => Currency::parse(&code.to_ascii_uppercase())
                .ok()
                .and_then(|c| Money::from_minor(minor, c).ok())
                .filter(|m| m.currency() == request.amount.currency())
                .unwrap_or_else(|| request.amount.clone()),
            _ => request.amount.clone(),
        };
        let status = refund.status.unwrap_or_else(|| "pending".into());
        tracing::info!(refund_id = %refund.id, %status, "refund requested");
        Ok(RefundResult {
            refund_id: refund.id,
            status,
            amount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_does_not_show_in_debug_output() {
        let g = StripeGateway::new(StripeConfig::new(SecretKey::new("sk_test_topsecret"))).unwrap();
        assert!(!format!("{g:?}").contains("topsecret"));
    }

    #[test]
    fn a_base_url_must_be_http() {
        let c = StripeConfig::new(SecretKey::new("sk_test_x")).with_base_url("ftp://x");
        assert!(matches!(
            StripeGateway::new(c),
            Err(StripeConfigError::BadBaseUrl)
        ));
        let c = StripeConfig::new(SecretKey::new("sk_test_x")).with_base_url("http://127.0.0.1:1/");
        assert_eq!(
            StripeGateway::new(c).unwrap().base_url(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn backoff_grows_and_stays_jittered_within_bounds() {
        let mut c = StripeConfig::new(SecretKey::new("sk_test_x"));
        c.backoff_base = Duration::from_millis(100);
        let g = StripeGateway::new(c).unwrap();
        for attempt in 1..5 {
            let cap = 100u64 << attempt;
            let w = g.backoff(attempt).as_millis() as u64;
            assert!(w >= cap / 2 && w <= cap, "attempt {attempt}: {w}");
        }
    }
}
