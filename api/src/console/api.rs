//! The JSON API, called in-process with the signed-in user's token: the console gets the API's
//! role checks, validation and idempotency exactly, and its answers are the console's data.

use super::page::{link, Failure, PAGE_SIZE};
use super::session::Staff;
use crate::http::REQUEST_ID;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tower::ServiceExt;

/// The largest API answer a page reads (the NDJSON download is streamed, not read).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

pub struct Api<'a> {
    state: &'a AppState,
    token: &'a str,
}

impl<'a> Api<'a> {
    pub fn new(state: &'a AppState, staff: &'a Staff) -> Self {
        Self {
            state,
            token: &staff.token,
        }
    }

    pub async fn get(&self, uri: &str) -> Result<Value, Failure> {
        self.send(Method::GET, uri, None, None).await
    }

    /// One page, [`PAGE_SIZE`] long, of the list the API answers at `path` with the `query`
    /// pairs: the items under `items`, and the cursor of the next page, if any.
    pub async fn page(
        &self,
        path: &str,
        items: &str,
        query: &[(&str, &str)],
    ) -> Result<(Vec<Value>, Option<String>), Failure> {
        let limit = PAGE_SIZE.to_string();
        let mut query = query.to_vec();
        query.push(("limit", &limit));
        let found = self.get(&link(path, query)).await?;
        let next = found["next_cursor"].as_str().map(str::to_owned);
        Ok((found[items].as_array().cloned().unwrap_or_default(), next))
    }

    /// A command: `body` as JSON, with the form's idempotency key.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut request = self.request(method, uri);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let bytes = read(self.answer(uri, request.body(body)).await?).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            tracing::error!(%uri, error = %e, "the API answered the console with something other than JSON");
            Failure::internal(None)
        })
    }

    /// The API's successful answer to a GET of `uri` as it is (for NDJSON); any other answer as
    /// a [`Failure`].
    pub async fn get_raw(&self, uri: &str) -> Result<Response, Failure> {
        let request = self.request(Method::GET, uri).body(Body::empty());
        self.answer(uri, request).await
    }

    /// A request of `uri` with the signed-in user's token.
    fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
    }

    /// The API's successful answer to `request` (of `uri`); any other answer as a [`Failure`].
    async fn answer(
        &self,
        uri: &str,
        request: Result<Request, axum::http::Error>,
    ) -> Result<Response, Failure> {
        let request = request.map_err(|e| {
            tracing::error!(%uri, error = %e, "console built an invalid API request");
            Failure::internal(None)
        })?;
        let Ok(answer) = crate::router::app(self.state.clone())
            .oneshot(request)
            .await;
        if answer.status().is_success() {
            Ok(answer)
        } else {
            Err(failure(answer).await)
        }
    }
}

/// An answer's body, read whole.
pub async fn read(answer: Response) -> Result<bytes::Bytes, Failure> {
    axum::body::to_bytes(answer.into_body(), MAX_ANSWER)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading an API answer for the console failed");
            Failure::internal(None)
        })
}

/// What the console shows for the API's refusal. 5xx details stay in the log (the API logged
/// them under its request id).
async fn failure(answer: Response) -> Failure {
    let status = answer.status();
    let request_id = answer
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match status {
        StatusCode::UNAUTHORIZED => Failure::SignIn,
        StatusCode::FORBIDDEN => Failure::Forbidden,
        StatusCode::NOT_FOUND => Failure::NotFound,
        s if s.is_client_error() => {
            let body: Value = match read(answer).await {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                Err(failure) => return failure,
            };
            let error = &body["error"];
            let mut message = error["message"].as_str().unwrap_or("refused").to_owned();
            if let (Some(field), Some(reason)) = (
                error["details"]["field"].as_str(),
                error["details"]["reason"].as_str(),
            ) {
                message = format!("{message} ({field}: {reason})");
            }
            Failure::refused(status, message)
        }
        _ => Failure::internal(request_id),
    }
}
