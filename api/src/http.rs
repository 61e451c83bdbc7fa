//! Cross-cutting HTTP layers: request ids and the error body, authentication and roles, command
//! latency, and the reply type of command handlers.

use crate::auth::{AuthError, Principal, Role};
use crate::error::ApiError;
use crate::extract::RequestIds;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::trace::TRACEPARENT;
use commands::{Consistency, Executed, TraceParent};
use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";
pub const CORRELATION_ID: &str = "x-correlation-id";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

fn header_id(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    let ok = !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_string())
}

/// Outermost layer (one per route, so it sees the matched route): takes or makes the request id
/// (UUIDv7) and correlation id, runs the request in a span carrying both and the trace id (the
/// caller's W3C `traceparent` continued, or a new trace), echoes the ids, and renders
/// every error in the one JSON shape with the request id (logging the internal detail of 5xx
/// answers). It also records the latency of command requests (every method but GET and HEAD) by
/// route; requests that matched no route are not recorded.
///
/// A hand-written service rather than `axum::middleware::from_fn`: it calls the inner service
/// directly instead of cloning and boxing it on every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContextLayer;

/// The future of this module's layers: the answer, which is never an error.
pub type Answer = BoxFuture<'static, Result<Response, Infallible>>;

/// The associated types and `poll_ready` of this module's services: each answers with an
/// [`Answer`] and is ready when its `inner` service is.
macro_rules! answers_when_inner_is_ready {
    () => {
        type Response = Response;
        type Error = Infallible;
        type Future = Answer;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.inner.poll_ready(cx)
        }
    };
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> RequestContext<S> {
        RequestContext { inner }
    }
}

/// The service of [`RequestContextLayer`].
#[derive(Clone, Debug)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    answers_when_inner_is_ready!();

    fn call(&mut self, mut req: Request) -> Self::Future {
        let request_id = header_id(req.headers(), REQUEST_ID)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let correlation_id =
            header_id(req.headers(), CORRELATION_ID).unwrap_or_else(|| request_id.clone());
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            %request_id,
            %correlation_id,
            trace_id = tracing::field::Empty,
            subject = tracing::field::Empty,
            role = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let incoming = req
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let trace = TraceParent::for_request(&span, incoming);
        span.record("trace_id", trace.trace_id());
        req.extensions_mut().insert(RequestIds {
            request_id: request_id.clone(),
            correlation_id: correlation_id.clone(),
            trace,
        });
        let histogram = command_route(&req).map(|(method, route)| command_histogram(method, route));
        let started = Instant::now();
        // The inner layers (the auth check among them) start inside the span.
        let inner = span.in_scope(|| self.inner.call(req));
        Box::pin(async move {
            let Ok(response) = inner.instrument(span.clone()).await;
            if let Some(histogram) = histogram {
                histogram.record(started.elapsed().as_secs_f64());
            }
            let mut response = if response.status().is_client_error()
                || response.status().is_server_error()
                || response.extensions().get::<ApiError>().is_some()
            {
                render_error(response, &request_id)
                    .instrument(span.clone())
                    .await
            } else {
                response
            };
            span.record("status", response.status().as_u16());
            record_answer(response.status(), started.elapsed());
            span.in_scope(|| {
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "request finished"
                )
            });
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                headers.insert(REQUEST_ID, v);
            }
            if let Ok(v) = HeaderValue::from_str(&correlation_id) {
                headers.insert(CORRELATION_ID, v);
            }
            Ok(response)
        })
    }
}

async fn render_error(response: Response, request_id: &str) -> Response {
    let status = response.status();
    let error = match response.extensions().get::<ApiError>().cloned() {
        Some(e) => e,
        None if status.is_client_error() || status.is_server_error() => {
            // JSON is already in our shape; HTML is the console's own error page.
            let is_own = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
            if is_own {
                return response;
            }
            // An answer from outside our handlers (unknown route, wrong method, a framework
            // rejection): keep its status and text, in our shape.
            let (parts, body) = response.into_parts();
            let text = axum::body::to_bytes(body, 8 * 1024)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            };
            let error = ApiError::from_status(status, message);
            return error_response(
                Response::from_parts(parts, Body::empty()),
                &error,
                request_id,
            );
        }
        None => return response,
    };
    error_response(response, &error, request_id)
}

fn error_response(response: Response, error: &ApiError, request_id: &str) -> Response {
    if error.status.is_server_error() {
        tracing::error!(
            status = error.status.as_u16(),
            code = error.code,
            detail = error.internal.as_deref().unwrap_or(""),
            "request failed"
        );
    } else {
        tracing::debug!(status = error.status.as_u16(), code = error.code, message = %error.message, "request refused");
    }
    let (mut parts, _) = response.into_parts();
    parts.extensions.remove::<ApiError>();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::to_vec(&error.body(request_id)).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

/// The auth layer of a route group: checks the bearer token (401 when missing, invalid or
/// expired) and the role (403), then puts the [`Principal`](crate::auth::Principal) in the request.
///
/// A token verified before is recognised without waiting, and the request goes straight to the
/// inner service; only a token seen for the first time is verified asynchronously (a JWKS
/// lookup may fetch keys).
#[derive(Clone)]
pub struct AuthLayer {
    pub state: AppState,
    /// The roles the route group admits.
    pub roles: &'static [Role],
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            access: self.clone(),
            inner,
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    access: AuthLayer,
    inner: S,
}

impl<S> Service<Request> for Authorize<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    answers_when_inner_is_ready!();

    fn call(&mut self, mut req: Request) -> Self::Future {
        let token = match bearer_token(&req) {
            Ok(token) => token,
            Err(e) => return refused(e),
        };
        if let Some(principal) = self.access.state.auth.remembered_now(token) {
            return match admit(self.access.roles, principal, &mut req) {
                Ok(()) => Box::pin(self.inner.call(req)),
                Err(e) => refused(e),
            };
        }
        let token = token.to_owned();
        let access = self.access.clone();
        // The readied inner service goes into the future; a clone stays for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let principal = match access.state.auth.verify(&token).await {
                Ok(principal) => principal,
                Err(e) => {
                    tracing::debug!(error = %e, "token refused");
                    return Ok(match e {
                        AuthError::Expired => ApiError::unauthorized("token expired"),
                        _ => ApiError::unauthorized("invalid token"),
                    }
                    .into_response());
                }
            };
            match admit(access.roles, principal, &mut req) {
                Ok(()) => inner.call(req).await,
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}

/// The bearer token of a request, or the 401 for its absence.
fn bearer_token(req: &Request) -> Result<&str, ApiError> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
}

/// Records the caller on the request span, checks its role, and puts it in the request.
fn admit(roles: &[Role], principal: Principal, req: &mut Request) -> Result<(), ApiError> {
    let span = tracing::Span::current();
    span.record("subject", principal.subject.as_str());
    span.record("role", principal.role.as_str());
    if !roles.contains(&principal.role) {
        return Err(ApiError::forbidden());
    }
    req.extensions_mut().insert(principal);
    Ok(())
}

fn refused(error: ApiError) -> Answer {
    Box::pin(std::future::ready(Ok(error.into_response())))
}

/// The method and route template of a command request (every method but GET and HEAD) that
/// matched a route.
fn command_route(req: &Request) -> Option<(&Method, &str)> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let route = req.extensions().get::<MatchedPath>()?;
    Some((req.method(), route.as_str()))
}

/// Distinct `command` labels kept as ready handles (routes times methods stay far below it).
const COMMAND_HISTOGRAMS: usize = 512;

/// Counts an answer by status class and records its latency (the API's 5xx count and p99, as
/// CloudWatch sees them through `emf`). Handles are kept: a request costs a few atomics.
fn record_answer(status: StatusCode, elapsed: std::time::Duration) {
    static HANDLES: OnceLock<([metrics::Counter; 5], metrics::Histogram)> = OnceLock::new();
    let (classes, latency) = HANDLES.get_or_init(|| {
        let class =
            |c: &'static str| metrics::counter!(crate::metrics::HTTP_RESPONSES, "class" => c);
        (
            [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            metrics::histogram!(crate::metrics::HTTP_DURATION),
        )
    });
    let index = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
    classes[index].increment(1);
    latency.record(elapsed.as_secs_f64());
}

/// The latency histogram of one command route, labelled `command` = "METHOD /route/{template}".
/// Handles are kept, so a request costs no label formatting or registry lookup.
fn command_histogram(method: &Method, route: &str) -> metrics::Histogram {
    type Handles = HashMap<Method, HashMap<String, metrics::Histogram>>;
    static HANDLES: OnceLock<RwLock<Handles>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let known = handles
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(method)
        .and_then(|routes| routes.get(route))
        .cloned();
    if let Some(histogram) = known {
        return histogram;
    }
    let histogram = metrics::histogram!(
        crate::metrics::COMMAND_DURATION,
        "command" => format!("{method} {route}")
    );
    let mut handles = handles.write().unwrap_or_else(|p| p.into_inner());
    if handles.values().map(HashMap::len).sum::<usize>() < COMMAND_HISTOGRAMS {
        handles
            .entry(method.clone())
            .or_default()
            .insert(route.to_owned(), histogram.clone());
    }
    histogram
}

/// The answer of a command: the use case's value with the commit's `consistency` token (for
/// read-your-writes, on every backend) and its feed `position` (where the backend knows it at
/// commit time: embedded) added, and `Idempotent-Replayed: true` when it is the replay of an
/// earlier request with the same key.
#[derive(Debug)]
pub struct CommandReply<T> {
    pub status: StatusCode,
    pub value: T,
    pub consistency: Option<Consistency>,
    pub position: Option<u64>,
    pub replayed: bool,
}

impl<T> CommandReply<T> {
    pub fn ok(executed: Executed<T>) -> Self {
        Self::with_status(StatusCode::OK, executed)
    }

    pub fn created(executed: Executed<T>) -> Self {
        Self::with_status(StatusCode::CREATED, executed)
    }

    pub fn with_status(status: StatusCode, executed: Executed<T>) -> Self {
        let position = executed.position();
        Self {
            status,
            consistency: executed.commit.as_ref().and_then(Consistency::of),
            value: executed.value,
            position,
            replayed: executed.replayed,
        }
    }
}

impl<T: Serialize> IntoResponse for CommandReply<T> {
    fn into_response(self) -> Response {
        // Encoded straight to bytes (no intermediate `Value`): the command's answer, with its
        // consistency token and feed position added as two more members.
        let mut body = match serde_json::to_vec(&self.value) {
            Ok(bytes) => bytes,
            Err(e) => {
                return ApiError::internal(format!("cannot encode reply: {e}")).into_response()
            }
        };
        let position = match self.position {
            Some(p) => p.to_string(),
            None => "null".to_string(),
        };
        if body.len() >= 2 && body.first() == Some(&b'{') && body.last() == Some(&b'}') {
            body.pop();
            if body.len() > 1 {
                body.push(b',');
            }
        } else {
            let mut wrapped = b"{\"result\":".to_vec();
            wrapped.extend_from_slice(&body);
            wrapped.push(b',');
            body = wrapped;
        }
        body.extend_from_slice(b"\"consistency\":");
        match &self.consistency {
            // The token's text is URL-safe, so it needs no JSON escaping.
            Some(token) => {
                body.push(b'"');
                body.extend_from_slice(token.to_string().as_bytes());
                body.push(b'"');
            }
            None => body.extend_from_slice(b"null"),
        }
        body.extend_from_slice(b",\"position\":");
        body.extend_from_slice(position.as_bytes());
        body.push(b'}');
        let mut response = (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if self.replayed {
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

#[cfg(test)]
mod reply_tests {
    use super::*;
    use commands::{CommitResult, Executed, StreamRef, StreamVersion};
    use domain::StreamType;

    async fn body_of<T: Serialize>(value: T, position: Option<u64>) -> serde_json::Value {
        let streams = position
            .map(|v| StreamVersion {
                stream: StreamRef::new(StreamType::Cart, "c1"),
                version: v,
            })
            .into_iter()
            .collect();
        let executed = Executed {
            value,
            commit: Some(CommitResult {
                position,
                streams,
                committed_at: chrono::Utc::now(),
            }),
            replayed: false,
        };
        let response = CommandReply::ok(executed).into_response();
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            "application/json"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("the reply is JSON")
    }

    #[tokio::test]
    async fn replies_carry_the_answer_the_token_and_the_feed_position() {
        let object = serde_json::json!({"cart_id": "c1", "lines": [{"q": 1}]});
        assert_eq!(
            body_of(object, Some(42)).await,
            serde_json::json!({"cart_id": "c1", "lines": [{"q": 1}],
                "consistency": "cart.c1.42", "position": 42})
        );
        assert_eq!(
            body_of(serde_json::json!({}), None).await,
            serde_json::json!({"consistency": null, "position": null})
        );
        assert_eq!(
            body_of(vec![1, 2], Some(7)).await,
            serde_json::json!({"result": [1, 2], "consistency": "cart.c1.7", "position": 7})
        );
        assert_eq!(
            body_of("done", Some(8)).await,
            serde_json::json!({"result": "done", "consistency": "cart.c1.8", "position": 8})
        );
    }
}
