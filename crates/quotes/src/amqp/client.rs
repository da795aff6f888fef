//! Client side: one connection and one channel, replies on RabbitMQ's direct reply-to, a map
//! from correlation id to the waiting call.
//!
//! - Requests are published `mandatory` with publisher confirms: when no queue exists (no server
//!   ever started) the broker returns the message at once and the call fails `unavailable`.
//! - Every call, connecting included, is bounded by `config.timeout` (→ `timeout`), and the
//!   request carries that timeout as its TTL so a late server does not answer stale requests.
//! - A dropped connection fails the calls waiting on it (`unavailable`); the next call
//!   reconnects.
//! - Concurrent calls share messages: a batcher task sends whatever calls have queued up as one
//!   request (a JSON array of requests, answered by an array of replies in the same order)
//!   while at most `batches_in_flight` earlier messages await their replies. Each message costs
//!   the broker a publish, a confirm, a delivery, an ack and a reply whatever it carries, so under
//!   load this divides the broker's work per quote; a lone call still goes alone, in the plain
//!   single-request format, without waiting.

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::{broker_error, properties, DIRECT_REPLY_TO};
use crate::wire::{decode, RpcRequest};
use crate::{normalize_symbol, AmqpConfig, DailySummary, Kind, Quote, QuoteClient, QuoteError};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// Calls the quote service over RabbitMQ. Cheap to share (`Arc`); connects on first use.
#[derive(Debug)]
pub struct AmqpQuoteClient {
    rpc: Arc<Rpc>,
    /// The batcher's queue, started by the first call (it needs a runtime).
    batcher: OnceLock<mpsc::Sender<Job>>,
}

/// The connection side: publishes one message and waits for its reply.
#[derive(Debug)]
struct Rpc {
    config: AmqpConfig,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// One call waiting in the batcher's queue; it gets its own reply's JSON.
struct Job {
    request: RpcRequest,
    reply: oneshot::Sender<Result<Vec<u8>, QuoteError>>,
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
            rpc: Arc::new(Rpc {
                config,
                link: tokio::sync::Mutex::new(None),
            }),
            batcher: OnceLock::new(),
        }
    }

    /// Connects now, to fail fast at start-up or for a readiness check.
    pub async fn connect(&self) -> Result<(), QuoteError> {
        let timeout = self.rpc.config.timeout;
        tokio::time::timeout(timeout, self.rpc.channel())
            .await
            .map_err(|_| QuoteError::Timeout("message broker did not answer in time".into()))?
            .map(|_| ())
    }

    /// True when a connection is up.
    pub async fn is_connected(&self) -> bool {
        self.rpc
            .link
            .lock()
            .await
            .as_ref()
            .is_some_and(Link::usable)
    }

    /// Closes the connection; a later call would open a new one.
    pub async fn close(&self) {
        if let Some(link) = self.rpc.link.lock().await.take() {
            if let Err(e) = link.connection.close(200, "client closed".into()).await {
                tracing::debug!(error = %e, "closing the AMQP client connection");
            }
        }
    }

    async fn call<T: DeserializeOwned>(&self, kind: Kind, symbol: &str) -> Result<T, QuoteError> {
        let symbol = normalize_symbol(symbol)?;
        let timeout = self.rpc.config.timeout;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: RpcRequest { symbol, kind },
            reply,
        };
        let queue = self.batcher.get_or_init(|| {
            let (queue, jobs) = mpsc::channel(BATCHER_QUEUE);
            tokio::spawn(batcher(Arc::clone(&self.rpc), jobs));
            queue
        });
        let round_trip = async {
            queue
                .send(job)
                .await
                .map_err(|_| QuoteError::Unavailable("the quote client has stopped".into()))?;
            answer.await.map_err(|_| {
                QuoteError::Unavailable("lost the connection to the message broker".into())
            })?
        };
        match tokio::time::timeout(timeout, round_trip).await {
            Ok(reply) => decode(&reply?),
            Err(_) => Err(QuoteError::Timeout(format!(
                "quote service did not answer within {} s",
                timeout.as_secs_f64()
            ))),
        }
    }
}

/// Calls queued while the batcher waits for a free slot, at most.
const BATCHER_QUEUE: usize = 4096;

/// Forms batches from the queued calls and sends each on its own task, at most
/// `batches_in_flight` at once; while every slot is taken, calls queue up for the next batch.
async fn batcher(rpc: Arc<Rpc>, mut jobs: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(rpc.config.batches_in_flight.max(1)));
    let max_batch = rpc.config.max_batch.max(1);
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(first) = jobs.recv().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Calls that timed out while queued are not sent.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let rpc = Arc::clone(&rpc);
        tokio::spawn(async move {
            rpc.send_batch(batch).await;
            drop(slot);
        });
    }
}

impl Rpc {
    /// Sends one message for `batch` and hands each call its reply (or the failure).
    async fn send_batch(&self, mut batch: Vec<Job>) {
        let body = if let [job] = batch.as_slice() {
            serde_json::to_vec(&job.request)
        } else {
            serde_json::to_vec(&batch.iter().map(|job| &job.request).collect::<Vec<_>>())
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a quote request");
                return fail(
                    batch,
                    &QuoteError::Unavailable("quote request failed".into()),
                );
            }
        };
        let timeout = self.config.timeout;
        let reply = match tokio::time::timeout(timeout, self.round_trip(&body)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return fail(batch, &e),
            Err(_) => {
                let e = QuoteError::Timeout(format!(
                    "quote service did not answer within {} s",
                    timeout.as_secs_f64()
                ));
                return fail(batch, &e);
            }
        };
        if batch.len() == 1 {
            if let Some(job) = batch.pop() {
                let _ = job.reply.send(Ok(reply));
            }
            return;
        }
        match split_replies(&reply, batch.len()) {
            Ok(replies) => {
                for (job, reply) in batch.into_iter().zip(replies) {
                    // The caller may have timed out meanwhile; then nobody wants this reply.
                    let _ = job.reply.send(Ok(reply));
                }
            }
            Err(e) => fail(batch, &e),
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
    let connection = Connection::connect(config.url.expose_secret(), properties(name))
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

/// Gives every call of a batch the same failure.
fn fail(batch: Vec<Job>, error: &QuoteError) {
    for job in batch {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// A batch's reply: a JSON array with one reply per request, in order.
fn split_replies(reply: &[u8], expected: usize) -> Result<Vec<Vec<u8>>, QuoteError> {
    let unreadable = || QuoteError::BadUpstream("quote service answered unreadably".into());
    let replies: Vec<&RawValue> = serde_json::from_slice(reply).map_err(|e| {
        tracing::warn!(error = %e, "unreadable batch reply from the quote service");
        unreadable()
    })?;
    if replies.len() != expected {
        tracing::warn!(
            expected,
            got = replies.len(),
            "batch reply from the quote service has the wrong length"
        );
        return Err(unreadable());
    }
    Ok(replies
        .into_iter()
        .map(|r| r.get().as_bytes().to_vec())
        .collect())
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
