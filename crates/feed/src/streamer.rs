//! Publishing simulated ticks: to MQTT (`bourse streamer`) or straight into the ingestor
//! (embedded mode, where no broker runs).

use crate::ingest::{Ack, Delivery};
use crate::market::Market;
use crate::mqtt::MqttUrl;
use chrono::Utc;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct StreamerConfig {
    pub stocks: usize,
    /// Ticks per second over all stocks.
    pub rate: f64,
    /// Stop after this many ticks (for benchmarks); `None` runs until shut down.
    pub count: Option<u64>,
    /// This publisher's share of the stocks (`part` of `parts`), when several publish in parallel.
    pub part: usize,
    pub parts: usize,
}

/// Number of ticks published so far, for progress reports.
pub type Published = Arc<AtomicU64>;

/// Feeds the in-process ingestor at `config.rate` until shutdown.
pub async fn run_embedded(
    config: StreamerConfig,
    tx: mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
) {
    let mut market = Market::new(config.stocks, None);
    let mut ticker = tokio::time::interval(period(config.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let delivery = Delivery {
            payload: market.next_message(Utc::now()),
            received_at: Utc::now(),
            source: "simulated".into(),
            ack: Ack::None,
        };
        if tx.send(delivery).await.is_err() {
            break;
        }
        sent += 1;
        if config.count.is_some_and(|c| sent >= c) {
            break;
        }
    }
}

fn period(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.clamp(0.001, 1_000_000.0))
}

/// Publishes to MQTT with QoS 1 until shutdown or `count`. Returns the number published (acked
/// by the broker).
pub async fn run_mqtt(
    config: StreamerConfig,
    url: MqttUrl,
    topic: String,
    client_id: String,
    published: Published,
    shutdown: CancellationToken,
) -> u64 {
    let mut opts = url.options(&client_id);
    opts.set_inflight(1000);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let poller = {
        let acked = acked.clone();
        let published = published.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            published.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff = Duration::from_millis(200);
                            info!("streamer connected to MQTT");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "streamer lost MQTT; reconnecting");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
        })
    };
    let mut market = Market::part(config.stocks, None, config.part, config.parts);
    // Rates above what a timer can pace one by one are sent in small bursts per millisecond.
    let per_ms = (config.rate / 1000.0).max(0.0);
    let (interval, burst) = if per_ms > 1.0 {
        (Duration::from_millis(1), per_ms.round() as u64)
    } else {
        (period(config.rate), 1)
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    'outer: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        for _ in 0..burst {
            let payload = market.next_message(Utc::now());
            if client
                .publish(&topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break 'outer;
            }
            sent += 1;
            if config.count.is_some_and(|c| sent >= c) {
                break 'outer;
            }
        }
    }
    // Wait (bounded) for the broker to acknowledge what was sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) < sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.cancel();
    let _ = poller.await;
    acked.load(Ordering::Relaxed)
}
