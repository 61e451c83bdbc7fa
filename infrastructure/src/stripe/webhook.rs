//! Stripe webhooks: signature verification, then parsing into a typed [`StripeEvent`].
//!
//! The order is fixed: nothing is parsed before `Stripe-Signature` verifies over the raw body.
//!
//! - **Signature.** The header holds `t=<unix seconds>` and one or more `v1=<hex>` entries (Stripe
//!   sends several while an endpoint secret is being rolled). The expected value is
//!   HMAC-SHA256(secret, `"{t}.{raw body}"`), compared in constant time. Any configured secret may
//!   match (rotation: configure the old and the new secret). `t` must be within the tolerance
//!   (300 s) of the injected `now`, in either direction.
//! - **Parsing.** A verified body is first parsed by async-stripe's typed webhook parser. When it
//!   rejects the payload (another API version, missing fields, localstripe's old-style objects),
//!   a lenient `serde_json` parse reads just the fields we need. A verified event is never
//!   dropped: it becomes a fact, [`StripeFact::Ignored`] for types we do not handle, or a
//!   [`WebhookError::Unparseable`] error that the caller logs and answers with a 4xx.

use chrono::{DateTime, Utc};
use commands::{Dispute, PaymentRefs, ProviderEvent, ProviderFact};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The facts a Stripe event can carry; the application layer's [`ProviderFact`], declared once.
pub type StripeFact = ProviderFact;

/// The name of the signature header.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Stripe's default tolerance between the signature timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a webhook request was refused. Every variant means "answer 400, change nothing".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing stripe-signature header")]
    MissingHeader,
    #[error("malformed stripe-signature header: {0}")]
    MalformedHeader(&'static str),
    #[error("no signature matches any configured secret")]
    NoMatchingSignature,
    /// The signature is authentic but too old (or too far in the future): a possible replay.
    #[error("signature timestamp outside the tolerance")]
    StaleTimestamp { timestamp: i64, now: i64 },
    /// Authentic, but not a Stripe event we can read at all (no id or no type). Logged with
    /// details by the caller; answered with a 4xx so it is visible in the Stripe dashboard.
    #[error("verified payload is not a readable stripe event: {0}")]
    Unparseable(String),
}

/// A webhook endpoint secret (`whsec_...`). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Configuration errors of the verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("at least one webhook secret is required")]
    NoSecret,
    #[error("webhook secrets must not be empty")]
    EmptySecret,
}

/// Which parser produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedWith {
    /// async-stripe's typed webhook parser.
    Typed,
    /// The lenient fallback (other API versions, old-style objects).
    Lenient,
}

impl ParsedWith {
    pub fn as_str(self) -> &'static str {
        match self {
            ParsedWith::Typed => "typed",
            ParsedWith::Lenient => "lenient",
        }
    }
}

/// A verified and parsed Stripe event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_...`: the dedupe key.
    pub id: String,
    pub event_type: String,
    /// Unix seconds; the signature timestamp when the payload has none (2012-era events).
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    pub parsed_with: ParsedWith,
    pub fact: StripeFact,
}

impl StripeEvent {
    /// `created` as a UTC time (the Unix epoch if out of range, which Stripe never sends).
    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.created, 0).unwrap_or_default()
    }
}

impl From<StripeEvent> for ProviderEvent {
    fn from(e: StripeEvent) -> Self {
        ProviderEvent {
            occurred_at: e.created_at(),
            event_id: e.id,
            event_type: e.event_type,
            livemode: e.livemode,
            fact: e.fact,
        }
    }
}

/// Verifies `Stripe-Signature` against one or more endpoint secrets.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
}

/// The parts of a `Stripe-Signature` header.
struct SignatureHeader {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<SignatureHeader, WebhookError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut saw_v1 = false;
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(WebhookError::MalformedHeader("expected key=value pairs"));
        };
        match key.trim() {
            "t" => {
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| WebhookError::MalformedHeader("timestamp is not an integer"))?;
                timestamp = Some(t);
            }
            "v1" => {
                saw_v1 = true;
                // A malformed entry cannot match; the others still may.
                if let Ok(bytes) = hex::decode(value.trim()) {
                    v1.push(bytes);
                }
            }
            // v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::MalformedHeader("no timestamp"))?;
    if !saw_v1 {
        return Err(WebhookError::MalformedHeader("no v1 signature"));
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// HMAC-SHA256 over `"{timestamp}.{body}"`. `None` never happens in practice: HMAC takes keys of
/// any length, but the API is fallible.
fn mac_for(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Signs `body` the way Stripe does, returning a `Stripe-Signature` header value
/// (`t=<timestamp>,v1=<hex>`).
///
/// Test support (the `testsuite` feature): for signing fixtures in tests of any crate. Not used
/// when verifying.
#[cfg(any(test, feature = "testsuite"))]
pub fn sign_for_test(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = mac_for(secret.as_bytes(), timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={sig}")
}

impl WebhookVerifier {
    /// A verifier accepting a signature by any of `secrets` (give two while rotating), with
    /// Stripe's 300 s tolerance.
    pub fn new<I, S>(secrets: I) -> Result<Self, WebhookConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let secrets: Vec<WebhookSecret> = secrets
            .into_iter()
            .map(|s| WebhookSecret::new(s.into().trim().to_string()))
            .collect();
        if secrets.is_empty() {
            return Err(WebhookConfigError::NoSecret);
        }
        if secrets.iter().any(|s| s.0.is_empty()) {
            return Err(WebhookConfigError::EmptySecret);
        }
        Ok(Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Checks the signature of `body` (the raw request body, byte for byte). Returns the
    /// signature timestamp.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<i64, WebhookError> {
        let header = header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or(WebhookError::MissingHeader)?;
        let parsed = parse_header(header)?;
        let matched = self.secrets.iter().any(|secret| {
            let Some(mac) = mac_for(secret.bytes(), parsed.timestamp, body) else {
                return false;
            };
            // `verify_slice` compares in constant time.
            parsed
                .v1
                .iter()
                .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        if !matched {
            return Err(WebhookError::NoMatchingSignature);
        }
        let now = now.timestamp();
        if parsed.timestamp.abs_diff(now) > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                timestamp: parsed.timestamp,
                now,
            });
        }
        Ok(parsed.timestamp)
    }

    /// Verifies, then parses. Nothing is parsed unless the signature verifies.
    // Refusals are expected at an internet-facing edge: warn, not error.
    #[tracing::instrument(
        skip_all,
        fields(event_id, event_type, parsed_with),
        err(level = "warn", Display)
    )]
    pub fn verify_and_parse(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<StripeEvent, WebhookError> {
        let signed_at = self.verify(header, body, now)?;
        let event = parse_verified(body, signed_at)?;
        let span = tracing::Span::current();
        span.record("event_id", event.id.as_str());
        span.record("event_type", event.event_type.as_str());
        span.record("parsed_with", event.parsed_with.as_str());
        Ok(event)
    }
}

/// Parses a body whose signature was verified (typed first, then lenient).
///
/// `signed_at` stands in for `created` when the payload has none.
pub fn parse_verified(body: &[u8], signed_at: i64) -> Result<StripeEvent, WebhookError> {
    if let Some(event) = std::str::from_utf8(body).ok().and_then(typed::parse) {
        return Ok(event);
    }
    let event = lenient::parse(body, signed_at)?;
    tracing::debug!(event_id = %event.id, api_version = ?event.api_version, "typed parser rejected a verified event, parsed leniently");
    Ok(event)
}

/// The reason given for a failed payment: decline code, then code, then message.
fn failure_reason(decline_code: Option<&str>, code: Option<&str>, message: Option<&str>) -> String {
    [decline_code, code, message]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("payment_failed")
        .to_string()
}

/// The refund id for a `charge.refunded` fact: the latest refund's id, or a stable stand-in made
/// of the charge id and the cumulative amount.
fn refund_id_or_synthesized(latest: Option<String>, charge_id: &str, total_minor: i64) -> String {
    latest
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("{charge_id}:refunded:{total_minor}"))
}

mod typed {
    //! async-stripe's typed parser (miniserde over the SDK's generated types).

    use super::*;
    use stripe_webhook::{EventObject, Webhook};

    pub(super) fn parse(payload: &str) -> Option<StripeEvent> {
        // The signature was checked by our verifier; `insecure` only parses. (In release builds
        // async-stripe logs a warning per call; filter `stripe_webhook` in the log config.)
        let event = Webhook::insecure(payload).ok()?;
        let event_type = event.type_.as_str().to_string();
        let fact = match event.data.object {
            EventObject::PaymentIntentSucceeded(pi) => ProviderFact::IntentSucceeded {
                intent_id: pi.id.as_str().to_string(),
                charge_id: pi
                    .latest_charge
                    .as_ref()
                    .map(|c| c.id().as_str().to_string()),
                amount_minor: if pi.amount_received > 0 {
                    pi.amount_received
                } else {
                    pi.amount
                },
                currency: pi.currency.to_string(),
                refs: PaymentRefs::from_metadata(&pi.metadata),
            },
            EventObject::PaymentIntentPaymentFailed(pi) => ProviderFact::IntentFailed {
                intent_id: pi.id.as_str().to_string(),
                reason: pi
                    .last_payment_error
                    .as_ref()
                    .map(|e| {
                        failure_reason(
                            e.decline_code.as_deref(),
                            e.code.as_ref().map(|c| c.as_str()),
                            e.message.as_deref(),
                        )
                    })
                    .unwrap_or_else(|| failure_reason(None, None, None)),
                refs: PaymentRefs::from_metadata(&pi.metadata),
            },
            EventObject::PaymentIntentCanceled(pi) => ProviderFact::IntentCanceled {
                intent_id: pi.id.as_str().to_string(),
                refs: PaymentRefs::from_metadata(&pi.metadata),
            },
            EventObject::PaymentIntentRequiresAction(pi) => ProviderFact::IntentRequiresAction {
                intent_id: pi.id.as_str().to_string(),
                refs: PaymentRefs::from_metadata(&pi.metadata),
            },
            EventObject::PaymentIntentProcessing(pi) => ProviderFact::IntentProcessing {
                intent_id: pi.id.as_str().to_string(),
                refs: PaymentRefs::from_metadata(&pi.metadata),
            },
            EventObject::ChargeRefunded(ch) => {
                let charge_id = ch.id.as_str().to_string();
                // Stripe lists refunds newest first; pick the newest by `created` anyway.
                let latest = ch.refunds.as_ref().and_then(|l| {
                    l.data
                        .iter()
                        .max_by_key(|r| r.created)
                        .map(|r| r.id.as_str().to_string())
                });
                ProviderFact::ChargeRefunded {
                    intent_id: ch
                        .payment_intent
                        .as_ref()
                        .map(|p| p.id().as_str().to_string()),
                    refund_id: refund_id_or_synthesized(latest, &charge_id, ch.amount_refunded),
                    charge_id,
                    amount_refunded_minor: ch.amount_refunded,
                    currency: ch.currency.to_string(),
                    refs: PaymentRefs::from_metadata(&ch.metadata),
                }
            }
            EventObject::ChargeDisputeCreated(dp) | EventObject::ChargeDisputeClosed(dp) => {
                let dispute = Dispute {
                    dispute_id: dp.id.as_str().to_string(),
                    intent_id: dp
                        .payment_intent
                        .as_ref()
                        .map(|p| p.id().as_str().to_string()),
                    charge_id: Some(dp.charge.id().as_str().to_string()),
                    reason: dp.reason.clone(),
                    status: dp.status.as_str().to_string(),
                    amount_minor: Some(dp.amount),
                    currency: Some(dp.currency.to_string()),
                    refs: PaymentRefs::from_metadata(&dp.metadata),
                };
                dispute_fact(&event_type, dispute)
            }
            _ => ProviderFact::Ignored {
                event_type: event_type.clone(),
            },
        };
        Some(StripeEvent {
            id: event.id.as_str().to_string(),
            event_type,
            created: event.created,
            livemode: event.livemode,
            api_version: event.api_version.map(|v| v.to_string()),
            parsed_with: ParsedWith::Typed,
            fact,
        })
    }
}

mod lenient {
    //! Just the fields we need, each optional, from any API version Stripe has sent (and from
    //! localstripe). Expandable fields are read as an id string or an object with an `id`.

    use super::*;

    #[derive(Deserialize)]
    struct Envelope {
        id: Option<String>,
        #[serde(rename = "type")]
        event_type: Option<String>,
        created: Option<i64>,
        #[serde(default)]
        livemode: bool,
        api_version: Option<String>,
        data: Option<Data>,
    }

    #[derive(Deserialize)]
    struct Data {
        object: Option<Value>,
    }

    fn str_field(obj: &Value, key: &str) -> Option<String> {
        obj.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty())
    }

    fn int_field(obj: &Value, key: &str) -> Option<i64> {
        obj.get(key).and_then(Value::as_i64)
    }

    /// An expandable reference: `"pi_123"` or `{"id": "pi_123", ...}`.
    fn id_field(obj: &Value, key: &str) -> Option<String> {
        match obj.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Object(o) => o
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .filter(|s| !s.trim().is_empty()),
            _ => None,
        }
    }

    fn refs(obj: &Value) -> PaymentRefs {
        let metadata: HashMap<String, String> = obj
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        PaymentRefs::from_metadata(&metadata)
    }

    fn missing(what: &str) -> WebhookError {
        WebhookError::Unparseable(format!("missing {what}"))
    }

    pub(super) fn parse(body: &[u8], signed_at: i64) -> Result<StripeEvent, WebhookError> {
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Unparseable(format!("not a json event: {e}")))?;
        let id = envelope
            .id
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| missing("event id"))?;
        let event_type = envelope
            .event_type
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| missing("event type"))?;
        let object = envelope.data.and_then(|d| d.object);
        let fact = match object {
            Some(obj) => fact(&event_type, &obj)?,
            None if is_handled(&event_type) => return Err(missing("data.object")),
            None => ProviderFact::Ignored {
                event_type: event_type.clone(),
            },
        };
        Ok(StripeEvent {
            id,
            event_type,
            created: envelope.created.unwrap_or(signed_at),
            livemode: envelope.livemode,
            api_version: envelope.api_version,
            parsed_with: ParsedWith::Lenient,
            fact,
        })
    }

    fn is_handled(event_type: &str) -> bool {
        matches!(
            event_type,
            "payment_intent.succeeded"
                | "payment_intent.payment_failed"
                | "payment_intent.canceled"
                | "payment_intent.requires_action"
                | "payment_intent.processing"
                | "charge.refunded"
                | "charge.dispute.created"
                | "charge.dispute.closed"
        )
    }

    fn fact(event_type: &str, obj: &Value) -> Result<ProviderFact, WebhookError> {
        let intent_id = || str_field(obj, "id").ok_or_else(|| missing("data.object.id"));
        Ok(match event_type {
            "payment_intent.succeeded" => {
                let received = int_field(obj, "amount_received").filter(|a| *a > 0);
                // `latest_charge` since API 2022-11-15; `charges.data` before.
                let charge_id = id_field(obj, "latest_charge").or_else(|| {
                    obj.get("charges")
                        .and_then(|c| c.get("data"))
                        .and_then(Value::as_array)
                        .and_then(|list| list.first())
                        .and_then(|c| str_field(c, "id"))
                });
                ProviderFact::IntentSucceeded {
                    intent_id: intent_id()?,
                    charge_id,
                    amount_minor: received
                        .or_else(|| int_field(obj, "amount"))
                        .ok_or_else(|| missing("data.object.amount"))?,
                    currency: str_field(obj, "currency")
                        .ok_or_else(|| missing("data.object.currency"))?,
                    refs: refs(obj),
                }
            }
            "payment_intent.payment_failed" => {
                let error = obj.get("last_payment_error").filter(|e| e.is_object());
                let field = |k: &str| error.and_then(|e| str_field(e, k));
                let charge_failure = obj
                    .get("latest_charge")
                    .filter(|c| c.is_object())
                    .and_then(|c| str_field(c, "failure_code"));
                ProviderFact::IntentFailed {
                    intent_id: intent_id()?,
                    reason: failure_reason(
                        field("decline_code").as_deref(),
                        field("code").or(charge_failure).as_deref(),
                        field("message").as_deref(),
                    ),
                    refs: refs(obj),
                }
            }
            "payment_intent.canceled" => ProviderFact::IntentCanceled {
                intent_id: intent_id()?,
                refs: refs(obj),
            },
            "payment_intent.requires_action" => ProviderFact::IntentRequiresAction {
                intent_id: intent_id()?,
                refs: refs(obj),
            },
            "payment_intent.processing" => ProviderFact::IntentProcessing {
                intent_id: intent_id()?,
                refs: refs(obj),
            },
            "charge.refunded" => {
                let charge_id = str_field(obj, "id").ok_or_else(|| missing("data.object.id"))?;
                // 2012-era charges have no `amount_refunded`: `refunded: true` means all of it.
                let total = match int_field(obj, "amount_refunded") {
                    Some(t) => t,
                    None if obj.get("refunded").and_then(Value::as_bool) == Some(true) => {
                        int_field(obj, "amount").ok_or_else(|| missing("data.object.amount"))?
                    }
                    None => 0,
                };
                let latest = obj
                    .get("refunds")
                    .and_then(|r| r.get("data").or(Some(r)))
                    .and_then(Value::as_array)
                    .and_then(|list| {
                        list.iter()
                            .filter_map(|r| {
                                Some((int_field(r, "created").unwrap_or(0), str_field(r, "id")?))
                            })
                            .max_by_key(|(created, _)| *created)
                            .map(|(_, id)| id)
                    });
                ProviderFact::ChargeRefunded {
                    intent_id: id_field(obj, "payment_intent"),
                    refund_id: refund_id_or_synthesized(latest, &charge_id, total),
                    charge_id,
                    amount_refunded_minor: total,
                    currency: str_field(obj, "currency")
                        .ok_or_else(|| missing("data.object.currency"))?,
                    refs: refs(obj),
                }
            }
            "charge.dispute.created" | "charge.dispute.closed" => {
                let dispute_id = str_field(obj, "id").ok_or_else(|| missing("data.object.id"))?;
                let dispute = Dispute {
                    dispute_id,
                    intent_id: id_field(obj, "payment_intent"),
                    charge_id: id_field(obj, "charge"),
                    reason: str_field(obj, "reason").unwrap_or_else(|| "general".into()),
                    status: str_field(obj, "status").unwrap_or_else(|| "unknown".into()),
                    amount_minor: int_field(obj, "amount"),
                    currency: str_field(obj, "currency"),
                    refs: refs(obj),
                };
                dispute_fact(event_type, dispute)
            }
            other => ProviderFact::Ignored {
                event_type: other.to_string(),
            },
        })
    }
}

/// A dispute event's fact: `charge.dispute.created`, or else closed.
fn dispute_fact(event_type: &str, dispute: Dispute) -> ProviderFact {
    if event_type == "charge.dispute.created" {
        ProviderFact::DisputeCreated(dispute)
    } else {
        ProviderFact::DisputeClosed(dispute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_header_signed_by_sign_for_test_verifies() {
        let v = WebhookVerifier::new(["whsec_a"]).unwrap();
        let h = sign_for_test("whsec_a", now().timestamp(), b"{}");
        assert_eq!(v.verify(Some(&h), b"{}", now()), Ok(now().timestamp()));
    }

    #[test]
    fn malformed_headers_are_told_apart_from_bad_signatures() {
        let v = WebhookVerifier::new(["whsec_a"]).unwrap();
        assert_eq!(
            v.verify(None, b"{}", now()),
            Err(WebhookError::MissingHeader)
        );
        assert_eq!(
            v.verify(Some("  "), b"{}", now()),
            Err(WebhookError::MissingHeader)
        );
        for bad in ["garbage", "t=abc,v1=00", "v1=00", "t=1"] {
            assert!(
                matches!(
                    v.verify(Some(bad), b"{}", now()),
                    Err(WebhookError::MalformedHeader(_))
                ),
                "{bad}"
            );
        }
        let t = now().timestamp();
        assert_eq!(
            v.verify(Some(&format!("t={t},v1=zz")), b"{}", now()),
            Err(WebhookError::NoMatchingSignature)
        );
    }

    #[test]
    fn an_empty_secret_list_is_a_configuration_error() {
        assert_eq!(
            WebhookVerifier::new(Vec::<String>::new()).unwrap_err(),
            WebhookConfigError::NoSecret
        );
        assert_eq!(
            WebhookVerifier::new([""]).unwrap_err(),
            WebhookConfigError::EmptySecret
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let v = WebhookVerifier::new(["whsec_supersecret"]).unwrap();
        assert!(!format!("{v:?}").contains("supersecret"));
    }

    #[test]
    fn a_verified_payload_without_an_id_is_unparseable_not_dropped() {
        assert!(matches!(
            parse_verified(br#"{"type":"charge.refunded"}"#, 1),
            Err(WebhookError::Unparseable(_))
        ));
        assert!(matches!(
            parse_verified(b"not json", 1),
            Err(WebhookError::Unparseable(_))
        ));
    }
}
