//! Per-route HTTP metrics, labelled by the route template (`/stocks/{stock_id}`), never by the raw
//! path, so that label cardinality stays bounded.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use std::time::Instant;

pub const REQUESTS: &str = "bourse_http_requests_total";
pub const DURATION: &str = "bourse_http_request_duration_seconds";

pub fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "HTTP request latency by route template"
    );
    counter!(REQUESTS, "route" => "/_healthcheck", "method" => "GET", "status" => "200")
        .increment(0);
    let _ = histogram!(DURATION, "route" => "/_healthcheck");
}

pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    histogram!(DURATION, "route" => route.clone()).record(started.elapsed().as_secs_f64());
    counter!(REQUESTS, "route" => route, "method" => method, "status" => status).increment(1);
    response
}
