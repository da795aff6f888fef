//! `bourse exchange`: the simulated exchange over HTTP (no database; the ledger lives in memory,
//! so run one replica). `POST /placements` with `Idempotency-Key`, `GET /placements`, plus
//! health, readiness and metrics.

use super::{cancel_on_signal, listen, metrics_endpoint, serve_http};
use crate::config::{Http, Orders};
use crate::telemetry;
use axum::routing::get;
use bourse_orders::simulated::{self, SimulatedExchange};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8002";

pub async fn run(http: &Http, orders: &Orders) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    simulated::describe_metrics();
    let exchange = Arc::new(SimulatedExchange::new(
        orders.exchange_failure_rate,
        Duration::from_millis(orders.exchange_latency_ms),
    ));
    let app = simulated::router(exchange)
        .route("/_healthcheck", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", metrics_endpoint(metrics));
    let listener = listen(http, DEFAULT_ADDR).await?;
    info!(
        addr = %listener.local_addr()?,
        failure_rate = orders.exchange_failure_rate,
        latency_ms = orders.exchange_latency_ms,
        "bourse exchange listening"
    );
    let shutdown = CancellationToken::new();
    cancel_on_signal(&shutdown);
    let served = serve_http(http, listener, app, &shutdown).await;
    info!("bourse exchange stopped");
    served
}
