//! The API's one error type. Every failure becomes the status and JSON body that docs/api.md fixes;
//! internal errors are logged in full and answered with a fixed text that leaks nothing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bourse_domain::ValidationErrors;
use serde_json::json;
use std::any::Any;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed syntax: bad JSON, an unknown or mistyped query parameter.
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("invalid credentials")]
    BadCredentials,
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    /// A stock id that is not known: clients of the Thndr-style feed read `error`.
    #[error("stock not found")]
    StockNotFound,
    #[error("validation failed")]
    Validation(ValidationErrors),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// Over a bound (connections, event streams, password-hashing slots): 503 with `Retry-After`
    /// (seconds).
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    /// A quota is used up: 429 with `Retry-After` (seconds) and the DRF throttle's text, also as
    /// `detail`.
    #[error("Request was throttled. Expected available in {retry_after} seconds.")]
    Throttled { retry_after: u64 },
    /// A dependency (quote provider, exchange) failed; `status` is 4xx/5xx as docs/api.md maps it.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// `POST /orders` failed before its commit: the order API's fixed 500 body. Logged, never sent.
    #[error("order not placed: {0}")]
    OrderNotPlaced(anyhow::Error),
    /// Anything unexpected. The text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl From<bourse_store::StoreError> for ApiError {
    fn from(e: bourse_store::StoreError) -> Self {
        match e {
            bourse_store::StoreError::Conflict(what) => ApiError::Conflict(what),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        ApiError::Validation(e)
    }
}

impl ApiError {
    /// The error of a load shared by several requests (a cache's single flight): each of them
    /// answers the same; an internal error's cause is logged by whoever sends it.
    pub fn shared(e: std::sync::Arc<ApiError>) -> ApiError {
        std::sync::Arc::try_unwrap(e).unwrap_or_else(|e| match e.as_ref() {
            ApiError::BadRequest(m) => ApiError::BadRequest(m.clone()),
            ApiError::Unauthorized => ApiError::Unauthorized,
            ApiError::BadCredentials => ApiError::BadCredentials,
            ApiError::Forbidden => ApiError::Forbidden,
            ApiError::NotFound(m) => ApiError::NotFound(m.clone()),
            ApiError::StockNotFound => ApiError::StockNotFound,
            ApiError::Validation(v) => ApiError::Validation(v.clone()),
            ApiError::Conflict(m) => ApiError::Conflict(m.clone()),
            ApiError::Unavailable(m) => ApiError::Unavailable(m.clone()),
            ApiError::Busy {
                message,
                retry_after,
            } => ApiError::Busy {
                message: message.clone(),
                retry_after: *retry_after,
            },
            ApiError::Throttled { retry_after } => ApiError::Throttled {
                retry_after: *retry_after,
            },
            ApiError::Upstream {
                status,
                code,
                message,
            } => ApiError::Upstream {
                status: *status,
                code,
                message: message.clone(),
            },
            ApiError::OrderNotPlaced(_) | ApiError::Internal(_) => {
                ApiError::Internal(anyhow::anyhow!("{e}"))
            }
        })
    }
}

/// The `WWW-Authenticate` challenge: every scheme bourse accepts.
pub const CHALLENGE: &str =
    "Basic realm=\"bourse\", Bearer realm=\"bourse\", Token realm=\"bourse\"";

impl ApiError {
    /// Every password-hashing slot stayed busy for the whole wait.
    pub fn hashing_busy(retry_after: u64) -> ApiError {
        ApiError::Busy {
            message: "too many password checks at once; retry shortly".into(),
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({ "message": m })),
            ApiError::Unauthorized | ApiError::BadCredentials => {
                let m = self.to_string();
                (
                    StatusCode::UNAUTHORIZED,
                    json!({ "message": m, "detail": m }),
                )
            }
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                json!({ "message": "you do not have permission to perform this action" }),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({ "message": m })),
            ApiError::StockNotFound => (
                StatusCode::NOT_FOUND,
                json!({ "message": "stock not found", "error": "stock not found" }),
            ),
            ApiError::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "message": "validation failed", "errors": errors.0 }),
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({ "message": m })),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({ "message": m })),
            ApiError::Busy { message, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "message": message }),
            ),
            ApiError::Throttled { .. } => {
                let m = self.to_string();
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "message": m, "detail": m }),
                )
            }
            ApiError::Upstream {
                status,
                code,
                message,
            } => (*status, json!({ "message": message, "code": code })),
            ApiError::OrderNotPlaced(e) => {
                tracing::error!(error = ?e, "order not stored");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "message": "Internal server error while placing the order" }),
                )
            }
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "message": "internal server error" }),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        if let ApiError::Throttled { retry_after } | ApiError::Busy { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// Turns a panic in a handler into the same opaque 500 as any internal error.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}
