//! The request deadline (`BOURSE_REQUEST_TIMEOUT_SECS`). A request still running then is answered
//! 408. `POST /orders` is the exception: its order may have committed just before the deadline,
//! so its 503 says the order may exist and how to get it without placing it twice.

use crate::{ApiContext, ApiError};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn bound(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    let placing = req.method() == Method::POST && req.uri().path().ends_with("/orders");
    let key = placing
        .then(|| req.headers().get("idempotency-key")?.to_str().ok())
        .flatten()
        .map(str::to_owned);
    match tokio::time::timeout(ctx.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) if placing => order_may_exist(key.as_deref()).into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({ "message": "request timed out" })),
        )
            .into_response(),
    }
}

fn order_may_exist(key: Option<&str>) -> ApiError {
    let message = match key {
        Some(key) => format!(
            "timed out: the order may have been stored. Repeat the request with the same \
             Idempotency-Key ({key:?}): 200 with the order if it was stored, 201 if it is \
             stored now"
        ),
        None => "timed out: the order may have been stored. Look for it in GET /orders \
                 before placing it again (an Idempotency-Key makes retries safe)"
            .to_string(),
    };
    ApiError::Busy {
        message,
        retry_after: 1,
    }
}
