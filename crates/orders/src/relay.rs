//! The outbox relay: places stored orders at the exchange.
//!
//! One loop claims due outbox rows (a lease, see [`Store::claim_outbox`]) as long as there is
//! room for more placements in flight, and starts one task per order. The exchange takes its time
//! (0.5 s per placement in the simulation), so throughput comes from concurrency: with
//! `concurrency` placements in flight the relay sustains about `concurrency / latency` orders per
//! second. Each task records its outcome in one transaction with its event:
//!
//! - placed (201) or placed before (200, a duplicate of the same key): `placed`;
//! - anything else: a failed attempt, retried after an exponential backoff with jitter, until
//!   `max_attempts`, then `failed` with the last error.
//!
//! Exactly once: the idempotency key is the order id, so a placement the relay could not record
//! (crash, database down) is answered as a duplicate when the order is claimed again after its
//! lease, and recorded then. On shutdown the relay stops claiming and lets placements in flight
//! finish for up to `drain_timeout`; any left are claimed again after their lease.

use crate::exchange::{Exchange, PlacementRequest};
use crate::metrics;
use bourse_domain::order::Backoff;
use bourse_store::orders::{AttemptOutcome, Order};
use bourse_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Identifies this relay's claims; unique per process.
    pub worker: String,
    /// Placements in flight at most.
    pub concurrency: usize,
    /// Rows claimed per round at most.
    pub batch: u32,
    /// How long a claim lasts. Must exceed the exchange timeout, so that a row is claimed again
    /// only when its relay is gone, not while its placement is still running.
    pub lease: Duration,
    /// Pause between claims when there is no due work.
    pub poll_interval: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long shutdown waits for placements in flight.
    pub drain_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            worker: default_worker_id(),
            concurrency: 1024,
            batch: 256,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            max_attempts: 20,
            backoff: Backoff::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// `relay-<host>-<pid>-<random>`: unique even for two relays in one host and pid namespace.
pub fn default_worker_id() -> String {
    let nonce: u32 = rand::random();
    format!("relay-{}-{}-{nonce:08x}", host_name(), std::process::id())
}

/// This host's name (`HOSTNAME`, else /etc/hostname, else `local`), for ids that operators
/// should be able to trace back to a machine or pod.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}

pub struct Relay {
    store: Store,
    exchange: Arc<dyn Exchange>,
    config: RelayConfig,
    /// Woken after each recorded outcome, e.g. for the events publisher.
    recorded: Arc<Notify>,
}

impl Relay {
    pub fn new(store: Store, exchange: Arc<dyn Exchange>, config: RelayConfig) -> Relay {
        Relay {
            store,
            exchange,
            config,
            recorded: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever the relay recorded an outcome (and so new events).
    pub fn recorded(&self) -> Arc<Notify> {
        self.recorded.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains (see the module doc).
    pub async fn run(self, shutdown: CancellationToken) {
        let config = Arc::new(self.config);
        let concurrency = config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut tasks = JoinSet::new();
        let mut db_backoff = Duration::from_millis(100);
        info!(worker = %config.worker, concurrency, "relay started");
        loop {
            while tasks.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tasks.join_next() => continue,
                }
            }
            let want = u32::try_from(free)
                .unwrap_or(u32::MAX)
                .min(config.batch.max(1));
            match self
                .store
                .claim_outbox(&config.worker, want, config.lease)
                .await
            {
                Ok(orders) => {
                    db_backoff = Duration::from_millis(100);
                    let claimed = orders.len();
                    for order in orders {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // Cannot happen (we claimed no more than the free slots); the row
                            // is claimed again after its lease.
                            break;
                        };
                        let job = Job {
                            store: self.store.clone(),
                            exchange: self.exchange.clone(),
                            config: config.clone(),
                            recorded: self.recorded.clone(),
                        };
                        tasks.spawn(async move {
                            job.place(order).await;
                            drop(permit);
                        });
                    }
                    if claimed > 0 {
                        debug!(
                            claimed,
                            in_flight = concurrency - slots.available_permits(),
                            "claimed outbox rows"
                        );
                    }
                    if (claimed as u32) < want {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(config.poll_interval) => {}
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?db_backoff, "relay cannot claim outbox rows");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(db_backoff) => {}
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let in_flight = tasks.len();
        if in_flight > 0 {
            info!(
                in_flight,
                "relay stopping: letting placements in flight finish"
            );
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(config.drain_timeout, drain)
                .await
                .is_err()
            {
                warn!(
                    left = tasks.len(),
                    "placements still in flight at shutdown; they are claimed again after their lease"
                );
                tasks.abort_all();
            }
        }
        info!(worker = %config.worker, "relay stopped");
    }
}

/// What one placement task needs.
struct Job {
    store: Store,
    exchange: Arc<dyn Exchange>,
    config: Arc<RelayConfig>,
    recorded: Arc<Notify>,
}

impl Job {
    async fn place(&self, order: Order) {
        let request = PlacementRequest::from(&order);
        let key = order.id.to_string();
        match self.exchange.place(&key, &request).await {
            Ok(receipt) => {
                metrics::attempt(if receipt.duplicate {
                    "duplicate"
                } else {
                    "placed"
                });
                self.record_placed(&order, receipt.placed_at, receipt.duplicate)
                    .await;
            }
            Err(e) => {
                metrics::attempt("error");
                self.record_failure(&order, &e.to_string()).await;
            }
        }
        self.recorded.notify_one();
    }

    async fn record_placed(
        &self,
        order: &Order,
        placed_at: chrono::DateTime<chrono::Utc>,
        duplicate: bool,
    ) {
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=5 {
            match self.store.mark_placed(order.id, placed_at, duplicate).await {
                Ok(Some(attempts)) => {
                    metrics::order_finished("placed");
                    debug!(order = %order.id, attempts, duplicate, "order placed");
                    return;
                }
                Ok(None) => return, // recorded already, by another relay
                Err(e) if attempt < 5 => {
                    warn!(order = %order.id, error = %e, "cannot record a placement yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    // The exchange has it; the lease ends, the row is claimed again, the exchange
                    // answers with a duplicate and it is recorded then.
                    warn!(order = %order.id, error = %e, "cannot record a placement; it is recorded after the lease");
                }
            }
        }
    }

    async fn record_failure(&self, order: &Order, error: &str) {
        let attempt = u32::try_from(order.attempts).unwrap_or(0).saturating_add(1);
        let delay = self.config.backoff.delay(attempt, rand::random::<f64>());
        match self
            .store
            .record_failed_attempt(
                order.id,
                &self.config.worker,
                error,
                delay,
                self.config.max_attempts,
            )
            .await
        {
            Ok(AttemptOutcome::Retry { attempts }) => {
                debug!(order = %order.id, attempts, error, retry_in = ?delay, "placement failed; will retry");
            }
            Ok(AttemptOutcome::Failed { attempts }) => {
                metrics::order_finished("failed");
                warn!(order = %order.id, attempts, error, "order failed: no attempts left");
            }
            Ok(AttemptOutcome::NotClaimed) => {
                debug!(order = %order.id, "placement failed after the lease ended; another relay has it");
            }
            Err(e) => {
                // Not recorded: the row is due again when its lease ends.
                warn!(order = %order.id, error = %e, "cannot record a failed placement");
            }
        }
    }
}

/// Samples the outbox gauges every `every` until `shutdown`.
pub async fn sample_outbox(store: Store, every: Duration, shutdown: CancellationToken) {
    loop {
        match store.outbox_stats().await {
            Ok(s) => metrics::outbox(s.depth, s.oldest_age.as_secs_f64()),
            Err(e) => debug!(error = %e, "cannot sample the outbox"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
