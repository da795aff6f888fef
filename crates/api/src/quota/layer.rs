//! The tower layer: counts each tracked request before the handler runs, refuses it with 429
//! when the caller's quota is used up, and puts the `RateLimit-*` headers on every counted
//! answer. It reads the caller from the [`Caller`] that [`crate::caller::identify`] put in the
//! request's extensions, so credentials are checked once per request.

use super::window::Decision;
use super::{Quota, Subject};
use crate::caller::{address_key, is_untracked, request_path, Caller};
use crate::ApiError;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

#[derive(Clone)]
pub struct QuotaLayer {
    quota: Arc<Quota>,
}

impl QuotaLayer {
    pub fn new(quota: Arc<Quota>) -> Self {
        Self { quota }
    }
}

impl<S> Layer<S> for QuotaLayer {
    type Service = QuotaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaService {
            inner,
            quota: Arc::clone(&self.quota),
        }
    }
}

#[derive(Clone)]
pub struct QuotaService<S> {
    inner: S,
    quota: Arc<Quota>,
}

impl<S> Service<Request> for QuotaService<S>
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

    fn call(&mut self, req: Request) -> Self::Future {
        if is_untracked(request_path(&req)) {
            return Box::pin(self.inner.call(req));
        }
        let subject = subject(&req);
        // The inner call is made now, on the service that was polled ready, and its future is
        // polled only once the request is admitted (axum's routes do their work when polled, not
        // when called). The usual alternative, a clone of the inner service per request for the
        // future to call later, clones the route's handler state with it, which cost more than
        // the quota check itself.
        let admitted = self.inner.call(req);
        let quota = Arc::clone(&self.quota);
        Box::pin(async move {
            let Some(decision) = quota.check(&subject).await else {
                return admitted.await;
            };
            if !decision.admitted {
                let mut refused = ApiError::Throttled {
                    retry_after: decision.retry_after(),
                }
                .into_response();
                write_headers(&decision, refused.headers_mut());
                return Ok(refused);
            }
            let mut response = admitted.await?;
            write_headers(&decision, response.headers_mut());
            Ok(response)
        })
    }
}

fn subject(req: &Request) -> Subject {
    match req.extensions().get::<Caller>() {
        Some(caller) => Subject::of(caller),
        // Without the caller middleware (not installed by `app`), the socket's address.
        None => Subject::Anonymous(address_key(
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        )),
    }
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds until the count drops) and `-Policy`
/// (`100;w=86400`), as in the IETF RateLimit header fields draft.
pub fn write_headers(decision: &Decision, headers: &mut HeaderMap) {
    headers.insert(LIMIT.clone(), HeaderValue::from(decision.limit));
    headers.insert(REMAINING.clone(), HeaderValue::from(decision.remaining));
    headers.insert(RESET.clone(), HeaderValue::from(decision.reset_secs));
    if let Ok(policy) =
        HeaderValue::from_str(&format!("{};w={}", decision.limit, decision.window_secs))
    {
        headers.insert(POLICY.clone(), policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaConfig;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    fn service(
        limit: u64,
    ) -> QuotaService<
        impl Service<Request, Response = Response, Error = Infallible, Future: Send>
            + Clone
            + Send
            + 'static,
    > {
        let quota = Quota::new(&QuotaConfig {
            anonymous: limit,
            user: 0,
            ..QuotaConfig::default()
        })
        .unwrap()
        .unwrap();
        let handler = tower::service_fn(|_req: Request| async {
            Ok::<_, Infallible>(StatusCode::NO_CONTENT.into_response())
        });
        QuotaLayer::new(Arc::new(quota)).layer(handler)
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_handler() {
        let quota = Quota::new(&QuotaConfig {
            anonymous: 2,
            user: 0,
            ..QuotaConfig::default()
        })
        .unwrap()
        .unwrap();
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&ran);
        let handler = tower::service_fn(move |_req: Request| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Infallible>(StatusCode::NO_CONTENT.into_response())
            }
        });
        let svc = QuotaLayer::new(Arc::new(quota)).layer(handler);
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(
                svc.clone()
                    .oneshot(request("/stocks"))
                    .await
                    .unwrap()
                    .status(),
            );
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
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    fn request(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn counts_refuses_and_labels() {
        let svc = service(2);
        let first = svc.clone().oneshot(request("/stocks")).await.unwrap();
        assert_eq!(first.status(), StatusCode::NO_CONTENT);
        assert_eq!(first.headers()["ratelimit-limit"], "2");
        assert_eq!(first.headers()["ratelimit-remaining"], "1");
        assert_eq!(first.headers()["ratelimit-reset"], "86400");
        assert_eq!(first.headers()["ratelimit-policy"], "2;w=86400");
        let second = svc.clone().oneshot(request("/stocks")).await.unwrap();
        assert_eq!(second.headers()["ratelimit-remaining"], "0");
        let third = svc.clone().oneshot(request("/orders")).await.unwrap();
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = third.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((86_399..=86_400).contains(&retry), "{retry}");
        assert_eq!(third.headers()["ratelimit-remaining"], "0");
        let body = axum::body::to_bytes(third.into_body(), 1024).await.unwrap();
        let text = format!("Request was throttled. Expected available in {retry} seconds.");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"message": text, "detail": text})
        );
        // Untracked paths are neither counted nor refused.
        let health = svc.clone().oneshot(request("/_healthcheck")).await.unwrap();
        assert_eq!(health.status(), StatusCode::NO_CONTENT);
        assert!(!health.headers().contains_key("ratelimit-limit"));
    }
}
