//! Client side: one connection and one channel, replies on RabbitMQ's direct reply-to, a map
//! from correlation id to the waiting call.
//!
//! - Requests are published `mandatory` with publisher confirms: when no queue exists (no server
//!   ever started) the broker returns the message at once and the call fails `unavailable`.
//! - Every call, connecting included, is bounded by `config.timeout` (→ `timeout`), and the
//!   request carries that timeout as its TTL so a late server does not answer stale requests.
//! - A dropped connection fails the calls waiting on it (`unavailable`); the next call
//!   reconnects.

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{broker_error, properties, DIRECT_REPLY_TO};
use crate::wire::{decode, RpcRequest};
use crate::{normalize_symbol, AmqpConfig, DailySummary, Kind, Quote, QuoteClient, QuoteError};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// Calls the quote service over RabbitMQ. Cheap to share (`Arc`); connects on first use.
#[derive(Debug)]
pub struct AmqpQuoteClient {
    config: AmqpConfig,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// One live connection with its reply consumer.
#[derive(Debug)]
struct Link {
    connection: Connection,
    channel: Channel,
    /// Calls waiting for a reply on this connection.
    pending: Pending,
    alive: Arc<AtomicBool>,
    dispatcher: JoinHandle<()>,
}

impl Link {
    fn usable(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
            && self.connection.status().connected()
            && self.channel.status().connected()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Dropping the last connection handle closes it; the dispatcher would end then anyway.
        self.dispatcher.abort();
    }
}

impl AmqpQuoteClient {
    /// A client for `config.queue`; nothing is connected until the first call (or
    /// [`AmqpQuoteClient::connect`]), so the API can start before the broker.
    pub fn new(config: AmqpConfig) -> Self {
        Self {
            config,
            link: tokio::sync::Mutex::new(None),
        }
    }

    /// Connects now, to fail fast at start-up or for a readiness check.
    pub async fn connect(&self) -> Result<(), QuoteError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.channel())
            .await
            .map_err(|_| QuoteError::Timeout("message broker did not answer in time".into()))?
            .map(|_| ())
    }

    /// True when a connection is up.
    pub async fn is_connected(&self) -> bool {
        self.link.lock().await.as_ref().is_some_and(Link::usable)
    }

    /// Closes the connection; a later call would open a new one.
    pub async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            if let Err(e) = link.connection.close(200, "client closed".into()).await {
                tracing::debug!(error = %e, "closing the AMQP client connection");
            }
        }
    }

    /// The channel of a live connection, connecting if there is none.
    async fn channel(&self) -> Result<(Channel, Pending), QuoteError> {
        let mut link = self.link.lock().await;
        if let Some(live) = link.as_ref().filter(|l| l.usable()) {
            return Ok((live.channel.clone(), Arc::clone(&live.pending)));
        }
        if link.take().is_some() {
            tracing::info!(queue = %self.config.queue, "AMQP quote client reconnecting");
        }
        let fresh = open(&self.config).await?;
        let handles = (fresh.channel.clone(), Arc::clone(&fresh.pending));
        *link = Some(fresh);
        Ok(handles)
    }

    async fn call<T: DeserializeOwned>(&self, kind: Kind, symbol: &str) -> Result<T, QuoteError> {
        let symbol = normalize_symbol(symbol)?;
        let body = serde_json::to_vec(&RpcRequest { symbol, kind }).map_err(|e| {
            tracing::error!(error = %e, "cannot serialize a quote request");
            QuoteError::Unavailable("quote request failed".into())
        })?;
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.round_trip(&body)).await {
            Ok(reply) => decode(&reply?),
            Err(_) => Err(QuoteError::Timeout(format!(
                "quote service did not answer within {} s",
                timeout.as_secs_f64()
            ))),
        }
    }

    /// Publishes and waits for the reply. A publish that fails on a connection that looked
    /// alive (the broker restarted since the last call) is retried once on a fresh connection.
    /// The broker has (almost always) not taken that request; if it had, a quote is a read and
    /// asking twice is harmless.
    async fn round_trip(&self, body: &[u8]) -> Result<Vec<u8>, QuoteError> {
        match self.attempt(body).await {
            Err(Attempt::NotSent(_)) => {}
            Err(Attempt::Failed(e)) => return Err(e),
            Ok(reply) => return Ok(reply),
        }
        match self.attempt(body).await {
            Ok(reply) => Ok(reply),
            Err(Attempt::NotSent(e) | Attempt::Failed(e)) => Err(e),
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<Vec<u8>, Attempt> {
        let (channel, pending) = self.channel().await.map_err(Attempt::Failed)?;
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&pending).insert(id.clone(), tx);
        // Removes the entry however this call ends (reply, error, or timeout dropping us).
        let _entry = PendingEntry {
            pending: &pending,
            id: &id,
        };

        let ttl_ms = self.config.timeout.as_millis().to_string();
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_correlation_id(id.as_str().into())
            .with_expiration(ttl_ms.into());
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmation = channel
            .basic_publish(
                "".into(),
                self.config.queue.as_str().into(),
                options,
                body,
                props,
            )
            .await
            .map_err(|e| Attempt::NotSent(broker_error("publish", e)))?
            .await
            .map_err(|e| Attempt::NotSent(broker_error("publish confirm", e)))?;
        match confirmation {
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                return Err(Attempt::Failed(QuoteError::Unavailable(
                    "no quote service is serving requests".into(),
                )))
            }
            Confirmation::Nack(None) => {
                return Err(Attempt::Failed(QuoteError::Unavailable(
                    "message broker refused the quote request".into(),
                )))
            }
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
        }
        rx.await.map_err(|_| {
            Attempt::Failed(QuoteError::Unavailable(
                "lost the connection to the message broker".into(),
            ))
        })
    }
}

/// Connects, enables publisher confirms and starts consuming replies.
async fn open(config: &AmqpConfig) -> Result<Link, QuoteError> {
    let name = format!("bourse-quote-client {}", config.queue);
    let connection = Connection::connect(&config.url, properties(name))
        .await
        .map_err(|e| broker_error("connect", e))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| broker_error("channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| broker_error("confirm select", e))?;
    let replies = channel
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker_error("reply consume", e))?;
    let pending: Pending = Arc::default();
    let alive = Arc::new(AtomicBool::new(true));
    let dispatcher = tokio::spawn(dispatch(replies, Arc::clone(&pending), Arc::clone(&alive)));
    tracing::info!(queue = %config.queue, "AMQP quote client connected");
    Ok(Link {
        connection,
        channel,
        pending,
        alive,
        dispatcher,
    })
}

/// Hands each reply to the call waiting for its correlation id; when the connection ends,
/// fails every call still waiting on it.
async fn dispatch(mut replies: Consumer, pending: Pending, alive: Arc<AtomicBool>) {
    while let Some(Ok(reply)) = replies.next().await {
        let Some(id) = reply.properties.correlation_id() else {
            continue;
        };
        if let Some(waiter) = lock(&pending).remove(id.as_str()) {
            // The caller may have timed out meanwhile; then nobody wants this reply.
            let _ = waiter.send(reply.data);
        }
    }
    alive.store(false, Ordering::SeqCst);
    lock(&pending).clear();
    tracing::warn!("AMQP quote client lost its connection");
}

/// Why an attempt failed: before the broker took the request (safe to retry) or after.
enum Attempt {
    NotSent(QuoteError),
    Failed(QuoteError),
}

struct PendingEntry<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl QuoteClient for AmqpQuoteClient {
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        self.call(Kind::Quote, symbol).await
    }

    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        self.call(Kind::Daily, symbol).await
    }
}
