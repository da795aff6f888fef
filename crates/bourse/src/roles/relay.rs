//! `bourse relay`: the outbox relay as its own role (and the same relay embedded in `serve`
//! unless `BOURSE_RELAY=off`). Places stored orders at the exchange (in-process simulation, or
//! `BOURSE_EXCHANGE_URL` over HTTP), publishes order events to RabbitMQ when `BOURSE_AMQP_URL` is
//! set, keeps the outbox gauges current, and serves health and metrics.

use super::{cancel_on_signal, connect, listen, metrics_endpoint, redact, serve_http};
use crate::config::{Amqp, Database, Http, Orders};
use crate::telemetry;
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bourse_domain::order::Backoff;
use bourse_orders::relay::{default_worker_id, sample_outbox};
use bourse_orders::{
    EventPublisher, Exchange, HttpExchange, PublisherConfig, Relay, RelayConfig, SimulatedExchange,
};
use bourse_store::Store;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8003";

/// How often the outbox gauges are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The exchange adapter the configuration names.
pub fn exchange(config: &Orders) -> anyhow::Result<Arc<dyn Exchange>> {
    Ok(match &config.exchange_url {
        Some(url) => {
            info!(url = %url, "placing orders at the exchange over HTTP");
            Arc::new(
                HttpExchange::new(
                    url,
                    Duration::from_millis(config.exchange_timeout_ms.max(1)),
                )
                .context("cannot set up the exchange client")?,
            )
        }
        None => {
            info!(
                failure_rate = config.exchange_failure_rate,
                latency_ms = config.exchange_latency_ms,
                "placing orders at the in-process simulated exchange"
            );
            Arc::new(SimulatedExchange::new(
                config.exchange_failure_rate,
                Duration::from_millis(config.exchange_latency_ms),
            ))
        }
    })
}

pub fn relay_config(config: &Orders) -> anyhow::Result<RelayConfig> {
    anyhow::ensure!(
        config.relay_lease_ms > config.exchange_timeout_ms,
        "BOURSE_RELAY_LEASE_MS ({}) must exceed BOURSE_EXCHANGE_TIMEOUT_MS ({}): a claim must outlive its placement",
        config.relay_lease_ms,
        config.exchange_timeout_ms
    );
    anyhow::ensure!(
        config.order_max_attempts >= 1,
        "BOURSE_ORDER_MAX_ATTEMPTS must be at least 1"
    );
    Ok(RelayConfig {
        worker: default_worker_id(),
        concurrency: config.relay_concurrency.max(1),
        lease: Duration::from_millis(config.relay_lease_ms),
        max_attempts: config.order_max_attempts,
        backoff: Backoff {
            base: Duration::from_millis(config.order_retry_base_ms.max(1)),
            cap: Duration::from_millis(config.order_retry_max_ms.max(config.order_retry_base_ms)),
        },
        drain_timeout: Duration::from_millis(config.exchange_timeout_ms)
            .min(Duration::from_secs(10)),
        ..RelayConfig::default()
    })
}

/// Starts the relay, the events publisher (with AMQP) and the outbox sampler on `store`. They
/// stop when `shutdown` is cancelled; await the returned set to let them finish.
pub fn spawn(
    config: &Orders,
    amqp: &Amqp,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinSet<()>> {
    let relay = Relay::new(store.clone(), exchange(config)?, relay_config(config)?);
    let mut tasks = JoinSet::new();
    if let Some(url) = &amqp.amqp_url {
        let url = url.expose_secret();
        info!(amqp = %redact(url), exchange = bourse_orders::EVENTS_EXCHANGE, "publishing order events");
        let publisher =
            EventPublisher::new(store.clone(), PublisherConfig::new(url), relay.recorded());
        tasks.spawn(publisher.run(shutdown.clone()));
    }
    tasks.spawn(sample_outbox(store.clone(), SAMPLE_EVERY, shutdown.clone()));
    tasks.spawn(relay.run(shutdown.clone()));
    Ok(tasks)
}

pub async fn run(
    http: &Http,
    database: &Database,
    orders: &Orders,
    amqp: &Amqp,
) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    bourse_orders::metrics::describe();
    let store = connect(database).await?;
    if database.migrate {
        store.migrate().await.context("migrations failed")?;
    }
    info!(database = %redact(database.database_url.expose_secret()), engine = ?store.engine(), "database ready");

    let shutdown = CancellationToken::new();
    let mut tasks = spawn(orders, amqp, &store, &shutdown)?;

    let app = Router::new()
        .route("/_healthcheck", get(database_check))
        .route("/readyz", get(database_check))
        .with_state(store.clone())
        .route("/metrics", metrics_endpoint(metrics));
    let listener = listen(http, DEFAULT_ADDR).await?;
    info!(addr = %listener.local_addr()?, "bourse relay listening");
    cancel_on_signal(&shutdown);
    let served = serve_http(http, listener, app, &shutdown).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    store.close().await;
    info!("bourse relay stopped");
    served
}

/// 200 while the database answers: the relay can do nothing without it.
async fn database_check(State(store): State<Store>) -> (StatusCode, &'static str) {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database down")
        }
    }
}
