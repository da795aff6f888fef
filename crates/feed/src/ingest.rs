//! The one write path of the feed: parse, batch, commit, then acknowledge.
//!
//! Batches form by themselves: the ingestor takes the first waiting message, drains whatever else
//! is already queued (up to `max_batch`), and commits it all in one transaction. Under light load
//! that is one tick per transaction (lowest latency); under heavy load batches grow while the
//! previous one commits (highest throughput). A batch that fails to commit is retried with backoff
//! and never acknowledged, so the broker redelivers it if the process dies meanwhile.

use crate::metrics::{INGEST_LAG, TARGET_HITS, TICKS_INGESTED, TICKS_REJECTED};
use bourse_domain::{Analysis, Tick};
use bourse_store::feed::{DeadLetter, TargetHit};
use bourse_store::Store;
use chrono::{DateTime, Utc};
use metrics::{counter, histogram};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, warn};

/// How to acknowledge a message once it is committed.
pub enum Ack {
    /// In-process sources need no acknowledgement.
    None,
    /// Handed back to the MQTT consumer task, which owns the connection. The ingestor never
    /// waits on the MQTT client: the client's request queue is drained only while the consumer
    /// polls the event loop, and the consumer may itself be waiting for the ingestor.
    Mqtt {
        acks: tokio::sync::mpsc::UnboundedSender<rumqttc::Publish>,
        publish: rumqttc::Publish,
    },
}

/// One message as it came from a source.
pub struct Delivery {
    pub payload: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// Where it came from, kept with dead letters (`mqtt:thndr-trading`, `simulated`).
    pub source: String,
    pub ack: Ack,
}

/// What subscribers (the SSE stream, caches) hear after a commit.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    Tick(Tick),
    TargetHit(TargetHit),
    /// An analyst target set (or replaced) through the API, already judged against the price.
    AnalysisSet {
        stock_id: uuid::Uuid,
        analysis: Analysis,
    },
}

#[derive(Debug, Clone)]
pub struct IngestorConfig {
    pub max_batch: usize,
    /// Longest pause between retries of a batch the database refused.
    pub max_backoff: Duration,
}

impl Default for IngestorConfig {
    fn default() -> Self {
        IngestorConfig {
            max_batch: 2000,
            max_backoff: Duration::from_secs(10),
        }
    }
}

pub struct Ingestor {
    store: Store,
    events: broadcast::Sender<FeedEvent>,
    config: IngestorConfig,
}

impl Ingestor {
    pub fn new(store: Store, events: broadcast::Sender<FeedEvent>, config: IngestorConfig) -> Self {
        Ingestor {
            store,
            events,
            config,
        }
    }

    /// Runs until every sender of `rx` is dropped and the queue is drained: shutting down is
    /// dropping the senders, which lets the last batch commit and be acknowledged.
    pub async fn run(self, mut rx: mpsc::Receiver<Delivery>) {
        let mut batch: Vec<Delivery> = Vec::with_capacity(self.config.max_batch);
        loop {
            batch.clear();
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => break,
            }
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.process(&mut batch).await;
        }
        debug!("ingestor drained and stopped");
    }

    async fn process(&self, batch: &mut Vec<Delivery>) {
        let mut ticks = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for d in batch.iter() {
            match Tick::parse(&d.payload, d.received_at) {
                Ok(t) => ticks.push(t),
                Err(e) => {
                    warn!(
                        source = %d.source,
                        reason = e.reason(),
                        error = %e,
                        payload = %String::from_utf8_lossy(&d.payload),
                        "rejected feed message; stored as dead letter"
                    );
                    counter!(TICKS_REJECTED, "reason" => e.reason()).increment(1);
                    dead.push(DeadLetter {
                        source: d.source.clone(),
                        payload: d.payload.clone(),
                        reason: e.to_string(),
                        received_at: d.received_at,
                    });
                }
            }
        }
        let received_at = batch.last().map_or_else(Utc::now, |d| d.received_at);
        let mut backoff = Duration::from_millis(50);
        let outcome = loop {
            match self.store.ingest(&ticks, &dead, received_at).await {
                Ok(outcome) => break outcome,
                Err(e) => {
                    error!(error = %e, batch = batch.len(), retry_in = ?backoff, "feed batch not committed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        };
        let committed_at = Utc::now();
        for d in batch.drain(..) {
            if let Ack::Mqtt { acks, publish } = d.ack {
                if acks.send(publish).is_err() {
                    // The connection is gone; the broker redelivers, and ingest is idempotent
                    // on (stock_id, timestamp).
                    debug!("MQTT consumer stopped before an acknowledgement");
                }
            }
        }
        counter!(TICKS_INGESTED).increment(outcome.new_ticks.len() as u64);
        counter!(TARGET_HITS).increment(outcome.hits.len() as u64);
        let lag = histogram!(INGEST_LAG);
        for t in outcome.new_ticks {
            let secs = (committed_at - t.timestamp).num_microseconds().unwrap_or(0) as f64 / 1e6;
            lag.record(secs.max(0.0));
            // No subscriber is fine: send only fails when nobody listens.
            let _ = self.events.send(FeedEvent::Tick(t));
        }
        for hit in outcome.hits {
            tracing::info!(stock_id = %hit.stock_id, target = %hit.target, price = %hit.price, "target hit");
            let _ = self.events.send(FeedEvent::TargetHit(hit));
        }
    }
}
