//! The one write path of the feed: parse, batch, commit, then acknowledge.
//!
//! Batches form by themselves: the ingestor takes the first waiting message, drains whatever else
//! is already queued (up to `max_batch`), and commits it all in one transaction. Under light load
//! that is one tick per transaction (lowest latency); under heavy load batches grow while the
//! previous one commits (highest throughput).
//!
//! What cannot be stored never stops the feed: a message over the size limit, unparsable, or
//! dated outside [`TickLimits`] becomes a dead letter (counted by reason, logged once, kept with
//! its bytes). A batch the database refuses is split in halves until the refused tick is alone,
//! and that tick becomes a dead letter while the rest commits. A database outage is different:
//! the batch is retried with backoff and not acknowledged, so the broker redelivers it if the
//! process dies meanwhile.

use crate::metrics::{INGEST_LAG, TARGET_HITS, TICKS_INGESTED, TICKS_REJECTED};
use bourse_domain::{Analysis, Tick, TickLimits};
use bourse_store::feed::{DeadLetter, IngestOutcome, TargetHit};
use bourse_store::{Store, StoreError};
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
    /// Longest pause between retries of a batch while the database is unavailable.
    pub max_backoff: Duration,
    pub limits: TickLimits,
}

impl Default for IngestorConfig {
    fn default() -> Self {
        IngestorConfig {
            max_batch: 2000,
            max_backoff: Duration::from_secs(10),
            limits: TickLimits::default(),
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
        let mut parsed = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for d in batch.iter() {
            match Tick::parse_within(&d.payload, d.received_at, &self.config.limits) {
                Ok(t) => parsed.push((t, d)),
                Err(e) => dead.push(self.reject(d, e.reason(), &e.to_string())),
            }
        }
        let received_at = batch.last().map_or_else(Utc::now, |d| d.received_at);
        let outcome = self.commit(&parsed, dead, received_at).await;
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

    /// Commits the parsed ticks and the dead letters. A batch the database refuses is split in
    /// halves (the dead letters alone first) until the refused tick is alone; it becomes a dead
    /// letter and the rest commits.
    async fn commit(
        &self,
        parsed: &[(Tick, &Delivery)],
        mut dead: Vec<DeadLetter>,
        received_at: DateTime<Utc>,
    ) -> IngestOutcome {
        let mut outcome = IngestOutcome::default();
        let mut todo = vec![parsed];
        while let Some(part) = todo.pop() {
            let ticks: Vec<Tick> = part.iter().map(|(t, _)| t.clone()).collect();
            match self.commit_retrying(&ticks, &dead, received_at).await {
                Ok(done) => {
                    outcome.new_ticks.extend(done.new_ticks);
                    outcome.hits.extend(done.hits);
                    dead.clear();
                }
                Err(_) if !dead.is_empty() && !part.is_empty() => todo.extend([part, &[]]),
                Err(e) => match part {
                    [] => {
                        error!(error = %e, count = dead.len(), "the database refused dead letters; dropped");
                        dead.clear();
                    }
                    [(_, delivery)] => {
                        let why = e.to_string().replace('\0', "");
                        dead.push(self.reject(delivery, "refused_by_database", &why));
                        todo.push(&[]); // its dead letter commits next
                    }
                    _ => {
                        let (left, right) = part.split_at(part.len() / 2);
                        todo.extend([right, left]);
                    }
                },
            }
        }
        outcome
    }

    /// One commit, retried with backoff for as long as the database is unavailable; the error
    /// when the database refused the data.
    async fn commit_retrying(
        &self,
        ticks: &[Tick],
        dead: &[DeadLetter],
        received_at: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.ingest(ticks, dead, received_at).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if !e.is_data_error() => {
                    error!(error = %e, ticks = ticks.len(), retry_in = ?backoff, "database unavailable; feed batch not committed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(e) => {
                    warn!(error = %e, ticks = ticks.len(), dead_letters = dead.len(), "the database refused a feed batch; splitting it");
                    return Err(e);
                }
            }
        }
    }

    /// Counts, logs (once, the payload cut to [`LOGGED_BYTES`]) and returns the dead letter of a
    /// rejected message; its bytes are kept up to the tick size limit.
    fn reject(&self, d: &Delivery, reason: &'static str, error: &str) -> DeadLetter {
        let shown = &d.payload[..d.payload.len().min(LOGGED_BYTES)];
        warn!(
            source = %d.source,
            reason,
            error,
            size = d.payload.len(),
            payload = %String::from_utf8_lossy(shown),
            "rejected feed message; stored as dead letter"
        );
        counter!(TICKS_REJECTED, "reason" => reason).increment(1);
        let kept = d.payload.len().min(self.config.limits.max_bytes);
        DeadLetter {
            source: d.source.clone(),
            payload: d.payload[..kept].to_vec(),
            reason: format!("{reason}: {error}"),
            received_at: d.received_at,
        }
    }
}

/// How much of a rejected payload goes into its log line (control characters in it are escaped
/// by the log writer).
const LOGGED_BYTES: usize = 256;
