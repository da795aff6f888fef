//! The request deadline (`BOURSE_REQUEST_TIMEOUT_SECS`). A request still running then is answered
//! 408. `POST /orders` is the exception: its order may have committed just before the deadline,
//! so its 503 says the order may exist and how to get it without placing it twice.
//!
//! A tower layer rather than `axum::middleware::from_fn`: it runs on every request, and this way
//! costs one timer entry, no boxed future.

use crate::ApiError;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pin_project_lite::pin_project;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer(pub Duration);

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for Deadline<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let placing = req.method() == Method::POST && req.uri().path().ends_with("/orders");
        // The key is read only for an order, and kept for the case the deadline passes.
        let key = placing.then(|| {
            req.headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        DeadlineFuture {
            inner: tokio::time::timeout(self.timeout, self.inner.call(req)),
            order_key: key,
        }
    }
}

pin_project! {
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        // `Some` for `POST /orders`, with its Idempotency-Key if it had one.
        order_key: Option<Option<String>>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for DeadlineFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(_)) => Poll::Ready(Ok(match this.order_key.take() {
                Some(key) => order_may_exist(key.as_deref()).into_response(),
                None => (
                    StatusCode::REQUEST_TIMEOUT,
                    Json(json!({ "message": "request timed out" })),
                )
                    .into_response(),
            })),
        }
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
