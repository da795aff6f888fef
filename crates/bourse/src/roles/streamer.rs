//! `bourse streamer`: publishes simulated ticks to MQTT, and serves health and metrics.

use super::{cancel_on_signal, metrics_endpoint};
use crate::config::{Feed, Http};
use crate::telemetry;
use axum::routing::get;
use axum::Router;
use bourse_feed::mqtt::MqttUrl;
use bourse_feed::streamer::{run_mqtt, Published, StreamerConfig};
use metrics::{counter, describe_counter};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8004";
const PUBLISHED: &str = "bourse_streamer_published_total";

/// The streamer's own flags (the broker and topic come from the configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Number of stocks: CIB, Edita, Hamada Inc, then STK004, STK005, ...
    #[arg(long, default_value_t = 3)]
    pub stocks: usize,
    /// Ticks per second over all stocks.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Stop after publishing this many ticks (default: run until stopped).
    #[arg(long)]
    pub count: Option<u64>,
    /// Parallel MQTT connections (for load generation); the rate is split between them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

pub async fn run(http: &Http, config: &Feed, opts: Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.stocks >= 1, "--stocks must be at least 1");
    anyhow::ensure!(opts.rate > 0.0, "--rate must be positive");
    let handle = telemetry::init_metrics()?;
    describe_counter!(PUBLISHED, "Ticks published and acknowledged by the broker");
    counter!(PUBLISHED).increment(0);
    let url: MqttUrl = config
        .mqtt_url
        .clone()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into())
        .parse()?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(&shutdown);

    // Health and metrics for orchestrators.
    let addr = http
        .http_addr
        .clone()
        .unwrap_or_else(|| DEFAULT_ADDR.into());
    let app = Router::new()
        .route("/_healthcheck", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", metrics_endpoint(handle.clone()));
    match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            });
        }
        Err(e) => tracing::warn!(error = %e, addr, "streamer health endpoint not started"),
    }

    // Each connection publishes its own share of the stocks, so there are never more of them.
    let connections = opts.connections.clamp(1, opts.stocks.max(1));
    let published = Published::default();
    let started = Instant::now();
    info!(stocks = opts.stocks, rate = opts.rate, connections, topic = %config.mqtt_topic, "streamer publishing");
    let mut tasks = Vec::new();
    let base_id = format!("bourse-streamer-{}", std::process::id());
    for i in 0..connections {
        let count = opts
            .count
            .map(|c| c / connections as u64 + u64::from((i as u64) < c % connections as u64));
        tasks.push(tokio::spawn(run_mqtt(
            StreamerConfig {
                stocks: opts.stocks,
                rate: opts.rate / connections as f64,
                count,
                part: i,
                parts: connections,
            },
            url.clone(),
            config.mqtt_topic.clone(),
            format!("{base_id}-{i}"),
            published.clone(),
            shutdown.clone(),
        )));
    }
    let reporter = {
        let published = published.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = published.load(Ordering::Relaxed);
                counter!(PUBLISHED).increment(now - last);
                info!(
                    published = now,
                    rate = (now - last) as f64 / 5.0,
                    "streamer progress"
                );
                last = now;
            }
        })
    };
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    reporter.abort();
    let secs = started.elapsed().as_secs_f64();
    info!(
        published = total,
        seconds = secs,
        rate = total as f64 / secs.max(1e-9),
        "streamer done"
    );
    println!(
        "published {total} ticks in {secs:.3} s ({:.0} ticks/s)",
        total as f64 / secs.max(1e-9)
    );
    shutdown.cancel();
    Ok(())
}
