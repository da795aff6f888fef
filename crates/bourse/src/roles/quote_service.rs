//! `bourse quote-service`: the internal stock aggregator. Serves RabbitMQ RPC on the
//! quote queue when `BOURSE_AMQP_URL` is set, and always HTTP (`/internal/quote`,
//! `/internal/daily`) plus health, readiness and metrics.

use super::{cancel_on_signal, listen, metrics_endpoint, quotes, serve_http};
use crate::config::{Amqp, Http, Quotes};
use crate::telemetry;
use axum::http::StatusCode;
use axum::routing::get;
use bourse_quotes::amqp::AmqpServer;
use bourse_quotes::QuoteClient;
use secrecy::ExposeSecret;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8001";

pub async fn run(http: &Http, config: &Quotes, amqp: &Amqp) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    let service: Arc<dyn QuoteClient> = Arc::new(quotes::service(config)?);
    let shutdown = CancellationToken::new();
    let amqp = amqp.amqp_url.as_ref().map(|url| {
        AmqpServer::spawn(
            service.clone(),
            quotes::amqp_config(config, url.expose_secret()),
            &shutdown,
        )
    });
    let ready = amqp.as_ref().map(AmqpServer::ready_watch);

    let app = bourse_quotes::http::router(service)
        .route("/_healthcheck", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.as_ref().is_none_or(|r| *r.borrow());
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not consuming the quote queue",
                        )
                    }
                }
            }),
        )
        .route("/metrics", metrics_endpoint(metrics));
    let listener = listen(http, DEFAULT_ADDR).await?;
    info!(addr = %listener.local_addr()?, amqp = amqp.is_some(), queue = %config.quote_queue, "bourse quote-service listening");
    cancel_on_signal(&shutdown);
    let served = serve_http(http, listener, app, &shutdown).await;
    shutdown.cancel();
    if let Some(server) = amqp {
        server.shutdown().await;
    }
    info!("bourse quote-service stopped");
    served
}
