//! Publishes order events to RabbitMQ: the durable topic exchange `bourse.events`, routing key
//! the event name (`order.created`, `order.placement_failed`, `order.placed`, `order.failed`),
//! body `{"event","order_id","at","data"}`, persistent messages.
//!
//! Events are committed with the state change they describe; this publisher reads the ones not
//! yet published (oldest first), publishes them with publisher confirms, and marks them published
//! only once the broker confirmed them. A broker that is down delays events, never loses them; a
//! crash between the broker's confirm and the mark publishes an event twice (at-least-once, so
//! consumers deduplicate by order id and event).

use bourse_store::orders::OrderEvent;
use bourse_store::Store;
use chrono::SecondsFormat;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The exchange order events go to, by contract.
pub const EVENTS_EXCHANGE: &str = "bourse.events";

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The broker's URL, with its password: a secret.
    pub url: SecretString,
    pub exchange: String,
    /// Events read and published per round.
    pub batch: u32,
    /// Pause between rounds when there is nothing to publish (a relay's notification cuts it).
    pub idle: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl PublisherConfig {
    pub fn new(url: impl Into<String>) -> PublisherConfig {
        PublisherConfig {
            url: SecretString::from(url.into()),
            exchange: EVENTS_EXCHANGE.into(),
            batch: 500,
            idle: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

pub struct EventPublisher {
    store: Store,
    config: PublisherConfig,
    wake: Arc<Notify>,
}

/// The body of a published event.
pub fn message(e: &OrderEvent) -> Vec<u8> {
    json!({
        "event": e.event,
        "order_id": e.order_id,
        "at": e.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": e.data,
    })
    .to_string()
    .into_bytes()
}

impl EventPublisher {
    /// `wake` cuts the idle pause short (the relay notifies it after each outcome).
    pub fn new(store: Store, config: PublisherConfig, wake: Arc<Notify>) -> EventPublisher {
        EventPublisher {
            store,
            config,
            wake,
        }
    }

    /// Runs until `shutdown` is cancelled, reconnecting with backoff when the broker goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.reconnect_min;
        while !shutdown.is_cancelled() {
            match self.serve_once(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "order events publisher lost the broker");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.reconnect_max);
                }
            }
        }
        info!("order events publisher stopped");
    }

    async fn connect(&self) -> Result<(Connection, Channel), lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name("bourse-relay order events".into());
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(self.config.url.expose_secret(), props),
        )
        .await
        .map_err(|_| std::io::Error::other("connection attempt timed out"))??;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                self.config.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((connection, channel))
    }

    /// One connection's life: `Ok` on shutdown, `Err` when the broker failed.
    async fn serve_once(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), lapin::Error> {
        let (connection, channel) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            c = self.connect() => c?,
        };
        info!(exchange = %self.config.exchange, "order events publisher connected");
        *backoff = self.config.reconnect_min;
        let outcome = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            let full = match self.round(&channel).await {
                Ok(n) => n >= self.config.batch as usize,
                Err(RoundError::Broker(e)) => break Err(e),
                Err(RoundError::Store(e)) => {
                    warn!(error = %e, "cannot read order events to publish");
                    false
                }
            };
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.idle) => {}
                }
            }
        };
        let _ = connection.close(200, "shutdown".into()).await;
        outcome
    }

    /// Publishes one batch; returns how many events it held.
    async fn round(&self, channel: &Channel) -> Result<usize, RoundError> {
        let Some(batch) = self
            .store
            .unpublished_events(self.config.batch)
            .await
            .map_err(RoundError::Store)?
        else {
            return Ok(0); // another relay is publishing
        };
        let n = batch.events.len();
        if n == 0 {
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(n);
        for e in &batch.events {
            let confirm = channel
                .basic_publish(
                    self.config.exchange.as_str().into(),
                    e.event.as_str().into(),
                    BasicPublishOptions::default(),
                    &message(e),
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await
                .map_err(RoundError::Broker)?;
            pending.push((e.id, confirm));
        }
        let mut confirmed = Vec::with_capacity(n);
        for (id, confirm) in pending {
            match confirm.await {
                Ok(c) if c.is_ack() => confirmed.push(id),
                Ok(_) => debug!(
                    event = id,
                    "broker refused an order event; it is sent again"
                ),
                Err(e) => return Err(RoundError::Broker(e)),
            }
        }
        batch
            .mark_published(&confirmed)
            .await
            .map_err(RoundError::Store)?;
        debug!(published = confirmed.len(), "order events published");
        Ok(n)
    }
}

enum RoundError {
    Broker(lapin::Error),
    Store(bourse_store::StoreError),
}
