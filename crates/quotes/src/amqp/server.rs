//! Server side: consumes the request queue and answers each request with a [`QuoteClient`]
//! (normally the in-process [`crate::QuoteService`]).
//!
//! - Up to `prefetch` requests are handled at once, each in its own task.
//! - A request is acknowledged after its reply is published, so a crash in between makes the
//!   broker hand it to another replica (quotes are reads: answering twice is harmless).
//! - When the connection drops (broker restart), the server reconnects with exponential backoff
//!   and re-declares the queue; `ready` is false meanwhile, for `/readyz`.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::properties;
use crate::wire::{answer, encode, RpcRequest};
use crate::{AmqpConfig, QuoteClient, QuoteError};

/// How long shutdown waits for requests being answered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running AMQP RPC server. Dropping it does not stop it; call [`AmqpServer::shutdown`] or
/// cancel the token given to [`AmqpServer::spawn`].
#[derive(Debug)]
pub struct AmqpServer {
    token: CancellationToken,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl AmqpServer {
    /// Starts serving `config.queue` in the background. It stops when `shutdown` is called or
    /// `shutdown_token` (e.g. the process-wide one) is cancelled.
    pub fn spawn(
        client: Arc<dyn QuoteClient>,
        config: AmqpConfig,
        shutdown_token: &CancellationToken,
    ) -> Self {
        let token = shutdown_token.child_token();
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(run(client, config, token.clone(), ready_tx));
        Self { token, ready, task }
    }

    /// True while the server consumes the queue.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// A receiver that follows readiness, for health endpoints.
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Waits until the server consumes the queue; false if `timeout` passes first.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.clone();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops consuming, lets requests in progress finish (up to 5 s), closes the connection.
    pub async fn shutdown(self) {
        self.token.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "AMQP quote server task failed");
        }
    }
}

/// The reconnect loop.
async fn run(
    client: Arc<dyn QuoteClient>,
    config: AmqpConfig,
    token: CancellationToken,
    ready: watch::Sender<bool>,
) {
    let mut backoff = config.reconnect_min;
    while !token.is_cancelled() {
        match serve_once(&client, &config, &token, &ready, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                ready.send_replace(false);
                tracing::warn!(queue = %config.queue, error = %e, retry_in = ?backoff, "AMQP quote server lost the broker");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.reconnect_max);
            }
        }
    }
    ready.send_replace(false);
    tracing::info!(queue = %config.queue, "AMQP quote server stopped");
}

/// One connection's life: returns `Ok` on shutdown, `Err` when the broker went away.
async fn serve_once(
    client: &Arc<dyn QuoteClient>,
    config: &AmqpConfig,
    token: &CancellationToken,
    ready: &watch::Sender<bool>,
    backoff: &mut Duration,
) -> Result<(), lapin::Error> {
    let name = format!("bourse-quote-service {}", config.queue);
    let connect = Connection::connect(config.url.expose_secret(), properties(name));
    let connection = tokio::select! {
        _ = token.cancelled() => return Ok(()),
        c = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match c {
            Ok(c) => c?,
            Err(_) => return Err(std::io::Error::other("connection attempt timed out").into()),
        },
    };
    let channel = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    if let Some(expires) = config.queue_expires {
        let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
    }
    channel
        .queue_declare(
            config.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %config.queue, prefetch = config.prefetch, "AMQP quote server consuming");
    ready.send_replace(true);
    *backoff = config.reconnect_min;

    let bounds = Bounds {
        max_batch: config.max_batch,
    };
    let mut handlers = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            _ = token.cancelled() => break Ok(()),
            Some(_) = handlers.join_next() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    handlers.spawn(handle(Arc::clone(client), bounds, channel.clone(), delivery));
                }
                Some(Err(e)) => break Err(e),
                None => break Err(std::io::Error::other("consumer cancelled by the broker").into()),
            },
        }
    };
    ready.send_replace(false);
    if outcome.is_ok() {
        // Stop new deliveries, answer those in hand, then leave cleanly.
        if let Err(e) = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
        {
            tracing::warn!(error = %e, "cannot cancel the AMQP consumer");
        }
        let drain = async { while handlers.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("AMQP quote server stopped with requests still in progress");
        }
        if let Err(e) = connection.close(200, "shutdown".into()).await {
            tracing::debug!(error = %e, "closing the AMQP connection");
        }
    }
    outcome
}

/// Bytes one request may take in a message: `{"symbol": "<32 characters>", "kind": "daily"}` with
/// room to spare.
const MAX_REQUEST_BYTES: usize = 256;

/// What a message may carry: no more than the client ever sends (`max_batch` requests, each
/// with the known fields only). Anything else is refused whole, before any upstream call, so a
/// publisher that is not our client cannot spend the providers' quota.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    max_batch: usize,
}

impl Bounds {
    fn max_bytes(self) -> usize {
        self.max_batch.max(1) * MAX_REQUEST_BYTES
    }
}

/// The reply to a message: one request (`{"symbol": ...}`) gets one reply; a batch (a JSON array
/// of requests, see the client) gets an array of replies in the same order, its requests
/// answered concurrently. A message over the bounds gets one `bad_request` reply.
async fn respond(client: &dyn QuoteClient, bounds: Bounds, data: &[u8]) -> Vec<u8> {
    if data.len() > bounds.max_bytes() {
        return refused(format!(
            "a message may hold at most {} bytes",
            bounds.max_bytes()
        ));
    }
    let is_batch = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_batch {
        return match serde_json::from_slice::<RpcRequest>(data) {
            Ok(request) => logged(answer(client, &request).await),
            Err(e) => refused(format!("request must be {{\"symbol\": \"...\"}}: {e}")),
        };
    }
    let requests = match serde_json::from_slice::<Vec<RpcRequest>>(data) {
        Ok(requests) => requests,
        Err(e) => {
            return refused(format!(
                "a batch must be [{{\"symbol\": \"...\"}}, ...]: {e}"
            ))
        }
    };
    if requests.len() > bounds.max_batch {
        return refused(format!(
            "a batch may hold at most {} requests",
            bounds.max_batch
        ));
    }
    let replies =
        futures::future::join_all(requests.iter().map(|request| answer(client, request))).await;
    let mut body = Vec::with_capacity(replies.iter().map(|(r, _)| r.len() + 1).sum::<usize>() + 1);
    body.push(b'[');
    for (i, reply) in replies.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&logged(reply));
    }
    body.push(b']');
    body
}

/// A `bad_request` reply to a message refused whole; counted and logged (bounded).
fn refused(message: String) -> Vec<u8> {
    metrics::counter!(REFUSED_METRIC).increment(1);
    tracing::warn!(reason = %message, "quote message refused");
    logged(encode::<()>(Err(QuoteError::BadRequest(message))))
}

/// Messages on the quote queue refused whole (over the batch or size bound, unknown fields).
pub const REFUSED_METRIC: &str = "bourse_quote_messages_refused_total";

fn logged((body, error): (Vec<u8>, Option<QuoteError>)) -> Vec<u8> {
    if let Some(error) = &error {
        tracing::debug!(code = error.code(), "quote request answered with an error");
    }
    body
}

/// Answers one message and acknowledges it.
async fn handle(
    client: Arc<dyn QuoteClient>,
    bounds: Bounds,
    channel: Channel,
    delivery: lapin::message::Delivery,
) {
    let body = respond(client.as_ref(), bounds, &delivery.data).await;
    match delivery.properties.reply_to() {
        Some(reply_to) => {
            let mut props = BasicProperties::default().with_content_type("application/json".into());
            if let Some(id) = delivery.properties.correlation_id() {
                props = props.with_correlation_id(id.clone());
            }
            let published = channel
                .basic_publish(
                    "".into(),
                    reply_to.clone(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await;
            if let Err(e) = published {
                // Not acknowledged: the broker redelivers it once we (or another replica) are back.
                tracing::warn!(error = %e, "cannot publish a quote reply");
                return;
            }
        }
        None => tracing::warn!("quote request without reply_to dropped"),
    }
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "cannot acknowledge a quote request");
    }
}
