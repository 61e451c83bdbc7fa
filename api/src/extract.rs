//! Extractors whose rejections use the one error shape: JSON bodies, query strings, path
//! parameters, the authenticated principal, and [`Cmd`], which bundles what every command
//! handler needs (caller, metadata, idempotency key, body).

use crate::auth::Principal;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use commands::{Actor, Caller, CommandContext, IdempotencyKey, Metadata, TraceParent};
use domain::CustomerId;
use serde::de::DeserializeOwned;

/// The request and correlation ids of the current request, and the trace context it hands on to
/// the events it causes, set by the request middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    pub request_id: String,
    pub correlation_id: String,
    pub trace: TraceParent,
}

impl RequestIds {
    pub fn of(parts: &Parts) -> RequestIds {
        parts
            .extensions
            .get::<RequestIds>()
            .cloned()
            .unwrap_or_else(|| {
                let id = uuid::Uuid::now_v7().to_string();
                RequestIds {
                    request_id: id.clone(),
                    correlation_id: id,
                    trace: TraceParent::new_root(),
                }
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(RequestIds::of(parts))
    }
}

/// The authenticated caller, put in the request by the auth layer of the route's group.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
    }
}

impl Principal {
    /// The customer id of a customer caller; other roles have none.
    pub fn customer_id(&self) -> Result<&CustomerId, ApiError> {
        self.customer.as_ref().ok_or_else(ApiError::forbidden)
    }
}

/// Parses a JSON body into `T`, naming the offending field when serde can tell it. An empty body
/// counts as `{}` so commands without parameters accept both. A number with a zero fraction
/// (`3.0`) is an integer, as JSON Schema counts it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| json_error(".", &e))?;
    integral_numbers_as_integers(&mut json);
    serde_path_to_error::deserialize::<_, T>(json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })
}

/// Rewrites every float without a fraction that fits an integer (`3.0`, `-2e3`) as that integer.
fn integral_numbers_as_integers(json: &mut serde_json::Value) {
    use serde_json::Value;
    match json {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // `i64::MIN` and `u64::MAX + 1` are powers of two: both bounds are exact.
            let integer = if f.fract() != 0.0 {
                None
            } else if (i64::MIN as f64..0.0).contains(&f) {
                Some(serde_json::Number::from(f as i64))
            } else if (0.0..u64::MAX as f64).contains(&f) {
                Some(serde_json::Number::from(f as u64))
            } else {
                None
            };
            if let Some(integer) = integer {
                *n = integer;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::malformed(format!("request body is not valid JSON: {e}"))
        }
        Category::Data => {
            let message = e.to_string();
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|prefix| between(&message, prefix, "`"));
            let base = (path != "." && !path.is_empty()).then_some(path);
            let field = match (base, named) {
                (Some(b), Some(n)) if !b.ends_with(n) => format!("{b}.{n}"),
                (Some(b), _) => b.to_string(),
                (None, Some(n)) => n.to_string(),
                (None, None) => "body".to_string(),
            };
            // serde's message ends with the position, which is noise for a client.
            let reason = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            ApiError::validation(field, reason)
        }
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large()
    } else {
        ApiError::from_status(e.status(), e.body_text())
    }
}

/// A JSON body whose rejections use the API's error shape.
#[derive(Debug, Clone)]
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        Ok(AppJson(parse_json(&bytes)?))
    }
}

/// A query string whose rejections use the API's error shape (and name the parameter).
#[derive(Debug, Clone)]
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(AppQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                let named = between(&inner, "unknown field `", "`")
                    .or_else(|| between(&inner, "missing field `", "`"));
                let field = match named {
                    Some(n) => n.to_string(),
                    None if path != "." => path,
                    None => "query".to_string(),
                };
                ApiError::validation(field, inner)
            })
    }
}

/// Path parameters whose rejections use the API's error shape.
#[derive(Debug, Clone)]
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| AppPath(v))
            .map_err(|e| ApiError::validation("path", e.body_text()))
    }
}

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Everything a command handler needs: the caller, the command context (metadata and the
/// idempotency key) and the parsed body.
///
/// The idempotency command id is `http:{sub}:{METHOD route}:{key}` and its fingerprint covers
/// the method, the concrete path and the canonical JSON body, so the same key with another body
/// (or another cart) is refused with 422 instead of replaying the wrong answer.
#[derive(Debug)]
pub struct Cmd<T> {
    pub principal: Principal,
    pub ctx: CommandContext,
    pub body: T,
}

impl<T> Cmd<T> {
    pub fn caller(&self) -> Caller {
        self.principal.caller()
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Cmd<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let principal = Principal::from_request_parts(&mut parts, state).await?;
        let ids = RequestIds::of(&parts);
        let key = idempotency_key(&parts)?;
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| path.clone());
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(body_rejection)?;
        let parsed: T = parse_json(&bytes)?;
        let idempotency = key.map(|key| {
            let mut request = format!("{method} {path}\n").into_bytes();
            request.extend_from_slice(&canonical_body(&bytes));
            IdempotencyKey::new(
                format!("http:{}:{method} {route}:{key}", principal.subject),
                &request,
            )
        });
        Ok(Cmd {
            ctx: command_context(ids, &principal, idempotency),
            principal,
            body: parsed,
        })
    }
}

/// The context of a command `principal` asked for in the request of `ids`: the request's ids
/// and trace, the caller as the actor, and the idempotency key if any.
pub fn command_context(
    ids: RequestIds,
    principal: &Principal,
    idempotency: Option<IdempotencyKey>,
) -> CommandContext {
    let metadata = Metadata {
        correlation_id: ids.correlation_id,
        causation_id: None,
        actor: Actor {
            subject: principal.subject.clone(),
            role: principal.role.as_str().to_string(),
        },
        request_id: Some(ids.request_id),
        command_id: idempotency.as_ref().map(|k| k.command_id.clone()),
        traceparent: Some(ids.trace.to_string()),
    };
    CommandContext {
        metadata,
        idempotency,
    }
}

fn idempotency_key(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("must have 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// JSON re-serialized with sorted keys and no whitespace, so that formatting differences do not
/// count as a different request. Non-JSON bodies are taken as they are.
fn canonical_body(bytes: &[u8]) -> Vec<u8> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return b"{}".to_vec();
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_else(|_| bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        product_id: String,
        quantity: u32,
        address: Option<Address>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Address {
        city: String,
    }

    fn field(r: Result<Body, ApiError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        e.details.unwrap()["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(
            field(parse_json(br#"{"product_id":"p","quantity":-1}"#)),
            "quantity"
        );
        assert_eq!(
            field(parse_json(br#"{"product_id":"p","quantity":1,"x":2}"#)),
            "x"
        );
        assert_eq!(field(parse_json(br#"{"quantity":1}"#)), "product_id");
        assert_eq!(
            field(parse_json(
                br#"{"product_id":"p","quantity":1,"address":{"city":"B","zip":1}}"#
            )),
            "address.zip"
        );
    }

    #[test]
    fn an_integral_float_is_an_integer() {
        let body: Body = parse_json(br#"{"product_id":"p","quantity":3.0}"#).expect("parsed");
        assert_eq!(body.quantity, 3);
        assert_eq!(
            field(parse_json(br#"{"product_id":"p","quantity":3.5}"#)),
            "quantity"
        );
    }

    #[test]
    fn malformed_json_is_its_own_code() {
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.code, "malformed_json");
    }

    #[test]
    fn canonical_bodies_ignore_key_order_and_spacing() {
        assert_eq!(
            canonical_body(br#"{ "b": 1, "a": 2 }"#),
            canonical_body(br#"{"a":2,"b":1}"#)
        );
    }
}
