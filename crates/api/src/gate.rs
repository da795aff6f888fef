//! The gate in front of the routes, installed when quotas or the request log are on. For every
//! tracked request ([`is_untracked`] ones pass straight through) it finds the [`Caller`] (client
//! address and credentials, checked once for everything after it), writes the request log
//! line, and spends the caller's quota: 429 before the handler runs, `RateLimit-*` headers on
//! every answer it counts.
//!
//! One tower service rather than a middleware each: axum's `from_fn` clones the service below
//! it for every request (for a route, its boxed handler and state), and three of them cost a
//! cached request more than the quota check itself. Here a request without credentials (most
//! of the traffic, and all of it under an anonymous flood) is identified without waiting, so
//! the route is called at once, on the service that was polled ready, and its future is
//! polled only once the quota admits the request (axum's routes do their work when polled,
//! not when called). A request with credentials waits for their check (a lookup the first
//! time) before the route may see it, so it calls a clone of the route made for it.

use crate::auth;
use crate::identity::{is_untracked, path_of, request_path, Caller, Credential};
use crate::quota::{Quota, Subject};
use crate::request_log::{format_line, RequestLog};
use crate::{ApiContext, ApiError};
use axum::extract::{ConnectInfo, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::{Extensions, Method, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone)]
pub struct GateLayer {
    ctx: ApiContext,
}

impl GateLayer {
    /// Reads the client address source, the quota, the request log and the credential checks
    /// from `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    ctx: ApiContext,
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if is_untracked(request_path(&req)) {
            return Box::pin(self.inner.call(req));
        }
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let addr = self.ctx.client_addr.client_ip(req.headers(), peer);
        let quota = self.ctx.quota.clone();
        if !req.headers().contains_key(AUTHORIZATION) {
            let caller = Caller {
                addr,
                credential: Credential::Absent,
            };
            log(
                self.ctx.request_log.as_ref(),
                req.method(),
                req.uri(),
                req.extensions(),
                &caller,
            );
            let subject = Subject::of(&caller);
            req.extensions_mut().insert(caller);
            return Box::pin(spend(quota, subject, self.inner.call(req)));
        }
        // The clone goes to this request; the service that was polled ready stays for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let caller = Caller {
                addr,
                credential: auth::resolve(&parts, &ctx).await,
            };
            log(
                ctx.request_log.as_ref(),
                &parts.method,
                &parts.uri,
                &parts.extensions,
                &caller,
            );
            let subject = Subject::of(&caller);
            parts.extensions.insert(caller);
            spend(quota, subject, inner.call(Request::from_parts(parts, body))).await
        })
    }
}

/// The request log line, handed to the log's writer (no file I/O here).
fn log(
    request_log: Option<&RequestLog>,
    method: &Method,
    uri: &Uri,
    extensions: &Extensions,
    caller: &Caller,
) {
    if let Some(request_log) = request_log {
        request_log.record(format_line(
            Utc::now(),
            method.as_str(),
            path_of(uri, extensions),
            caller.log_name(),
        ));
    }
}

/// Counts the request against `subject`'s quota; `admitted` (the route's answer, not yet
/// polled) runs only when the quota admits it.
async fn spend<F>(
    quota: Option<Arc<Quota>>,
    subject: Subject,
    admitted: F,
) -> Result<Response, Infallible>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let Some(quota) = quota else {
        return admitted.await;
    };
    let Some(decision) = quota.check(&subject).await else {
        return admitted.await;
    };
    if !decision.admitted {
        let mut refused = ApiError::Throttled {
            retry_after: decision.retry_after(),
        }
        .into_response();
        quota.write_headers(&subject, &decision, refused.headers_mut());
        return Ok(refused);
    }
    let mut response = admitted.await?;
    quota.write_headers(&subject, &decision, response.headers_mut());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaConfig;
    use axum::http::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quota(anonymous: u64) -> Option<Arc<Quota>> {
        Quota::new(&QuotaConfig {
            anonymous,
            user: 0,
            ..QuotaConfig::default()
        })
        .unwrap()
        .map(Arc::new)
    }

    /// The route's answer, counting how many times it ran.
    fn route(ran: &Arc<AtomicUsize>) -> impl Future<Output = Result<Response, Infallible>> {
        let ran = Arc::clone(ran);
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_route() {
        let quota = quota(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let subject = Subject::address("192.0.2.1".parse().unwrap());
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let response = spend(quota.clone(), subject, route(&ran)).await.unwrap();
            statuses.push(response.status());
        }
        assert_eq!(
            statuses,
            [
                StatusCode::NO_CONTENT,
                StatusCode::NO_CONTENT,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn counts_refuses_and_labels() {
        let quota = quota(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let subject = Subject::address("192.0.2.2".parse().unwrap());
        let first = spend(quota.clone(), subject, route(&ran)).await.unwrap();
        assert_eq!(first.status(), StatusCode::NO_CONTENT);
        assert_eq!(first.headers()["ratelimit-limit"], "2");
        assert_eq!(first.headers()["ratelimit-remaining"], "1");
        // The request counts until its second is a day old: a day and part of a second.
        assert_eq!(first.headers()["ratelimit-reset"], "86401");
        assert_eq!(first.headers()["ratelimit-policy"], "2;w=86400");
        let second = spend(quota.clone(), subject, route(&ran)).await.unwrap();
        assert_eq!(second.headers()["ratelimit-remaining"], "0");
        let third = spend(quota.clone(), subject, route(&ran)).await.unwrap();
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = third.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((86_400..=86_401).contains(&retry), "{retry}");
        assert_eq!(third.headers()["ratelimit-remaining"], "0");
        let body = axum::body::to_bytes(third.into_body(), 1024).await.unwrap();
        let text = format!("Request was throttled. Expected available in {retry} seconds.");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"message": text, "detail": text})
        );
        // Another address has its own count; no quota at all means no headers.
        let other = Subject::address("192.0.2.3".parse().unwrap());
        let fresh = spend(quota, other, route(&ran)).await.unwrap();
        assert_eq!(fresh.headers()["ratelimit-remaining"], "1");
        let unlimited = spend(None, subject, route(&ran)).await.unwrap();
        assert_eq!(unlimited.status(), StatusCode::NO_CONTENT);
        assert!(!unlimited.headers().contains_key("ratelimit-limit"));
        assert_eq!(ran.load(Ordering::SeqCst), 4);
    }
}
