//! The one HTTP error type. Every failure (application errors, read-model and store errors,
//! extractor rejections, auth) becomes an [`ApiError`], rendered as
//! `{"error": {"code", "message", "details"?, "request_id"}}`.
//!
//! The request id is not known where an error is created, so [`ApiError::into_response`] stores
//! the error in the response extensions and the request layer (`http::RequestContextLayer`)
//! renders the final body with the request id and logs 5xx details. Internal details never reach
//! the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::{CommandError, GatewayError, StoreError};
use projections::ReadModelError;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// An error answer: status, stable code, client-safe message, optional details, and an
/// internal detail that only goes to the log.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Logged with the request id; never sent.
    pub internal: Option<String>,
}

/// The documented error shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, for example `validation_failed` or `insufficient_stock`.
    pub code: String,
    pub message: String,
    /// For validation errors: the offending `field` and the `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<ValidationDetails>,
    pub request_id: String,
}

/// The `details` of a validation error (see [`ApiError::validation`]).
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationDetails {
    /// The parameter, header or body field, for example `shipping_address.country`.
    pub field: String,
    pub reason: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            internal: None,
        }
    }

    /// 400 naming the offending field.
    pub fn validation(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let field = field.into();
        let reason = reason.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "validation_failed",
            message: format!("invalid {field}: {reason}"),
            details: Some(json!({ "field": field, "reason": reason })),
            internal: None,
        }
    }

    /// 400 for a body that is not JSON at all.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", reason)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this role may not use this endpoint",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than 64 KiB",
        )
    }

    /// 500 with an opaque message; `detail` is logged only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            internal: Some(detail.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error",
            )
        }
    }

    /// 503 for transient backend failures; `detail` is logged only.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        Self {
            internal: Some(detail.to_string()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable, retry later",
            )
        }
    }

    /// The JSON body for this error.
    pub fn body(&self, request_id: &str) -> Value {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        });
        if let (Some(details), Some(obj)) = (&self.details, error.as_object_mut()) {
            obj.insert("details".into(), details.clone());
        }
        json!({ "error": error })
    }

    /// The error code a bare status gets when something outside our handlers answered it
    /// (an unknown route, a wrong method).
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
            s if s.is_server_error() => {
                return Self::internal(message.into());
            }
            _ => "error",
        };
        Self::new(status, code, message)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound { what, .. } => ApiError::not_found(what),
            CommandError::Invalid { field, message } => ApiError::validation(field, message),
            CommandError::Rejected { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            CommandError::Conflict { stream } => {
                metrics::counter!("backbone_command_conflicts_total").increment(1);
                ApiError {
                    internal: Some(format!("version conflict on {stream}")),
                    ..ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        "the resource changed concurrently, retry the request",
                    )
                }
            }
            CommandError::IdempotencyMismatch => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "the Idempotency-Key was already used with a different request",
            ),
            CommandError::Store(e) => e.into(),
            CommandError::Gateway(GatewayError::Transient(reason)) => ApiError {
                internal: Some(reason),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "payment_provider_unavailable",
                    "the payment provider is unavailable, retry later",
                )
            },
            CommandError::Gateway(GatewayError::Rejected(reason)) => ApiError {
                internal: Some(reason),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "payment_rejected",
                    "the payment provider refused the request",
                )
            },
            CommandError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::unavailable(e),
            other => ApiError::internal(other),
        }
    }
}

impl From<ReadModelError> for ApiError {
    fn from(e: ReadModelError) -> Self {
        if e.is_transient() {
            ApiError::unavailable(e)
        } else {
            ApiError::internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request middleware replaces this body with one carrying the request id.
        let mut response = (self.status, Json(self.body(""))).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_maps_to_409_with_its_code() {
        let e: ApiError = CommandError::rejected("insufficient_stock", "only 2 left").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.code, "insufficient_stock");
    }

    #[test]
    fn an_internal_error_never_shows_its_detail() {
        let e: ApiError = CommandError::Internal("db password wrong at /etc/x".into()).into();
        let body = e.body("req-1").to_string();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.contains("password"), "{body}");
        assert!(body.contains("req-1"));
    }

    #[test]
    fn validation_names_the_field() {
        let e: ApiError = CommandError::invalid("quantity", "too big").into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body("r")["error"]["details"]["field"], "quantity");
    }
}
