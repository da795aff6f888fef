//! The HTTP API. One module per resource under `routes`, one error enum ([`ApiError`]) that maps
//! to the statuses and bodies of docs/api.md, one auth extractor ([`auth::AuthUser`]) for every
//! scheme.
//!
//! Main pieces: [`app`] (the whole router, with the `/api/v1` copy, docs and dashboard),
//! [`ApiContext`] (the handlers' shared state: store, caches, quote client, quota, channels),
//! [`gate`] (who is calling, quotas, the request log), [`identity`] (the credential, caller and
//! client address they share), [`quota`], [`openapi`].
//!
//! ```
//! use axum::response::IntoResponse;
//! use bourse_api::ApiError;
//!
//! // Every failure becomes the documented status and JSON body.
//! let response = ApiError::Throttled { retry_after: 42 }.into_response();
//! assert_eq!(response.status(), 429);
//! assert_eq!(response.headers()["retry-after"], "42");
//! ```

pub mod api_key;
pub mod auth;
pub mod cache;
pub mod credential_cache;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod gate;
pub mod http_metrics;
pub mod identity;
pub mod jwt;
pub mod login;
pub mod openapi;
pub mod page;
pub mod password;
pub mod quota;
pub mod request_log;
pub mod revocation;
pub mod routes;
pub mod series_cache;
pub mod server;
pub mod state;
pub mod timeout;

pub use error::ApiError;
pub use state::{ApiContext, Gatekeeping, Limits, Readiness, Services};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// Largest request body accepted: API bodies are small JSON documents.
const BODY_LIMIT: usize = 64 * 1024;

/// The complete application: every route at its documented path and again under `/api/v1`; operations,
/// docs and the dashboard (`GET /`) at the root only.
///
/// Around the routes, innermost first: the [`gate`] (who is calling, the request log line, the
/// quota: 429 before the handler runs; installed only when quotas or the log are on), then
/// metrics, timeout, body limit, panic guard and tracing.
pub fn app(ctx: ApiContext) -> Router {
    let api = routes::router();
    let mut router = Router::new()
        .merge(api.clone())
        .nest("/api/v1", api)
        .merge(routes::ops::router())
        .merge(openapi::docs(ctx.paging))
        .merge(dashboard::router())
        .fallback(routes::not_found);
    if ctx.quota.is_some() || ctx.request_log.is_some() {
        router = router.layer(gate::GateLayer::new(ctx.clone()));
    }
    router
        .layer(axum::middleware::from_fn(http_metrics::track))
        .layer(timeout::DeadlineLayer(ctx.request_timeout))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(ctx)
}
