//! Operational endpoints: liveness, readiness, metrics. Served at the root only.

use crate::ApiContext;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/_healthcheck", get(healthcheck))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// 200 while the process is alive and its database answers (as the financial-data API it follows answers).
#[utoipa::path(get, path = "/_healthcheck", tag = "operations",
    responses((status = 200), (status = 503)))]
pub async fn healthcheck(State(ctx): State<ApiContext>) -> impl IntoResponse {
    match ctx.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "down" })),
            )
        }
    }
}

/// 200 when every dependency answers, else 503, with the state of each.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200), (status = 503)))]
pub async fn readyz(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let database = ctx.store.ping().await.is_ok();
    let feed = ctx.readiness.feed_ready();
    let status = if database && feed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let state = |ok: bool| if ok { "ok" } else { "down" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "checks": { "database": state(database), "feed": state(feed) },
        })),
    )
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let body = ctx.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
