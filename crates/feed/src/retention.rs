//! The retention job of the role that ingests (`serve`): at start and then every `interval`, it
//! deletes ticks older than their retention (their minute bars stay) and dead letters beyond
//! theirs, in batches of `batch` rows, each its own short statement, so ingestion waits at most
//! one batch. Replicas may all run it: a row deleted by one is simply not found by another.

use bourse_store::{Store, StoreError};
use chrono::{TimeDelta, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// How long ticks are kept; `None` keeps them forever.
    pub ticks: Option<TimeDelta>,
    /// How long dead letters are kept; `None` keeps them forever.
    pub dead_letters: Option<TimeDelta>,
    /// Dead letters kept at most (the newest); `u64::MAX` for no bound.
    pub dead_letter_rows: u64,
    pub interval: Duration,
    pub batch: u32,
}

/// Runs the job until `shutdown`.
pub async fn run(store: Store, config: RetentionConfig, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        let started = std::time::Instant::now();
        match prune(&store, &config, &shutdown).await {
            Ok((0, 0)) => {}
            Ok((ticks, dead_letters)) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                info!(
                    ticks,
                    dead_letters, elapsed_ms, "retention: old rows deleted"
                );
            }
            Err(e) => warn!(error = %e, "retention: pass failed; next one retries"),
        }
    }
}

/// One pass: every stock's old ticks, then the dead letters; returns how many of each went.
pub async fn prune(
    store: &Store,
    config: &RetentionConfig,
    shutdown: &CancellationToken,
) -> Result<(u64, u64), StoreError> {
    let batch = config.batch.max(1);
    let now = Utc::now();
    let mut ticks = 0;
    if let Some(keep) = config.ticks {
        let before = now - keep;
        for stock in store.list_stocks().await? {
            ticks += drain(shutdown, batch, || {
                store.delete_ticks_before(stock.stock_id, &stock.name, before, batch)
            })
            .await?;
        }
    }
    let before = config
        .dead_letters
        .map_or(chrono::DateTime::UNIX_EPOCH, |keep| now - keep);
    let dead = drain(shutdown, batch, || {
        store.delete_dead_letters(before, config.dead_letter_rows, batch)
    })
    .await?;
    Ok((ticks, dead))
}

/// Repeats one batch delete until a batch comes back short (or shutdown), yielding between
/// batches so that other writers take their turn.
async fn drain<F, Fut>(
    shutdown: &CancellationToken,
    batch: u32,
    mut delete: F,
) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let done = delete().await?;
        total += done;
        if done < u64::from(batch) || shutdown.is_cancelled() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
