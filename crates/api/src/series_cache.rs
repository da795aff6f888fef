//! A short-lived cache of rendered time-series and indicator responses, per (symbol, query).
//!
//! The bodies are kept serialised (`Bytes`), so a hit costs a map lookup and a reference-count
//! increment, never a query or a JSON encoding. Entries live for the API's read-cache TTL
//! (`BOURSE_READ_CACHE_MS`, 50 ms by default; 0 turns the cache off) and are dropped at once when
//! this process ingests a tick of that symbol (its minute bar changed). Imports run in another
//! process and other replicas ingest their own share of the feed; for those the TTL bounds how
//! stale an answer can be.
//!
//! Concurrent misses of one key share one load (single flight), so an expiring entry under load
//! costs one query, not one per waiting request. An answer that took longer than the TTL to
//! compute (a year of minute bars) is kept for as long as it took, at most [`MAX_KEEP`]: it was
//! that old when it was sent anyway, and recomputing it back to back would only load the
//! database.
//!
//! The answers are kept in a [`moka`] cache bounded by bytes (`BOURSE_SERIES_CACHE_BYTES`, each
//! answer weighs its body): when full, the least useful answers are evicted, never the whole
//! cache. Invalidating a symbol moves it to a new generation, part of every key, so answers
//! computed before (even those still loading) are never served again and age out.

use crate::ApiError;
use axum::body::Bytes;
use bourse_feed::FeedEvent;
use moka::Expiry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// Larger bodies (huge raw ranges) are served but not kept.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest time an answer is kept, however long it took to compute.
pub const MAX_KEEP: Duration = Duration::from_secs(5);

/// (symbol and query, the symbol's generation).
type Key = (String, u64);

#[derive(Clone)]
struct Entry {
    body: Bytes,
    keep: Duration,
}

/// Each answer lives as long as it decided when it was computed.
struct KeepFor;

impl Expiry<Key, Entry> for KeepFor {
    fn expire_after_create(&self, _: &Key, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.keep)
    }
}

pub struct SeriesCache {
    ttl: Duration,
    answers: moka::future::Cache<Key, Entry>,
    /// Generation of each symbol that was ever invalidated (symbols of committed ticks).
    generations: RwLock<HashMap<String, AtomicU64>>,
}

impl SeriesCache {
    pub fn new(ttl: Duration, max_bytes: u64) -> SeriesCache {
        SeriesCache {
            ttl,
            answers: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &Key, entry: &Entry| {
                    u32::try_from(entry.body.len() + key.0.len() + 64).unwrap_or(u32::MAX)
                })
                .expire_after(KeepFor)
                .build(),
            generations: RwLock::new(HashMap::new()),
        }
    }

    /// The cached body for (`symbol`, `key`), or the result of `load` (then cached when it
    /// succeeded), shared by the concurrent callers of that key. Errors are never cached. The
    /// key is written once, only when the cache is on.
    pub async fn get_or_load<K, F, Fut>(
        &self,
        symbol: &str,
        key: K,
        load: F,
    ) -> Result<Bytes, ApiError>
    where
        K: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let key = (format!("{symbol}\0{key}"), self.generation(symbol));
        let ttl = self.ttl;
        let entry = self
            .answers
            .try_get_with_by_ref(&key, async move {
                let started = Instant::now();
                let body = load().await?;
                let keep = ttl.max(started.elapsed()).min(MAX_KEEP.max(ttl));
                Ok::<_, ApiError>(Entry { body, keep })
            })
            .await
            .map_err(ApiError::shared)?;
        if entry.body.len() > MAX_BODY {
            self.answers.invalidate(&key).await;
        }
        Ok(entry.body)
    }

    fn generation(&self, symbol: &str) -> u64 {
        self.generations
            .read()
            .ok()
            .and_then(|g| g.get(symbol).map(|n| n.load(Ordering::Acquire)))
            .unwrap_or(0)
    }

    /// Drops every cached response of `symbol`.
    pub fn invalidate(&self, symbol: &str) {
        if let Ok(generations) = self.generations.read() {
            if let Some(n) = generations.get(symbol) {
                n.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
        if let Ok(mut generations) = self.generations.write() {
            generations
                .entry(symbol.to_string())
                .or_insert_with(|| AtomicU64::new(0))
                .fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn clear(&self) {
        self.answers.invalidate_all();
    }

    /// Bytes held by the cached answers (after pending evictions ran).
    pub async fn weight(&self) -> u64 {
        self.answers.run_pending_tasks().await;
        self.answers.weighted_size()
    }
}

/// Drops the cached responses of a symbol whenever this process commits one of its ticks (which
/// moves its current minute bar). Runs until `shutdown`; if it falls behind the event stream it
/// empties the whole cache rather than risk keeping a stale entry.
pub fn invalidate_on_ticks(
    cache: Arc<SeriesCache>,
    mut events: broadcast::Receiver<FeedEvent>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                Ok(FeedEvent::Tick(tick)) => cache.invalidate(&tick.name),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => cache.clear(),
                Err(RecvError::Closed) => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn hits_share_one_load_and_invalidation_drops_them() {
        let cache = SeriesCache::new(Duration::from_secs(60), 1 << 20);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ApiError>(Bytes::from_static(b"[]"))
        };
        for _ in 0..3 {
            let body = cache.get_or_load("AMZN", "raw", load).await.unwrap();
            assert_eq!(&body[..], b"[]");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.invalidate("TSLA");
        cache.get_or_load("AMZN", "raw", load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.invalidate("AMZN");
        cache.get_or_load("AMZN", "raw", load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn slow_answers_are_kept_as_long_as_they_took() {
        let cache = SeriesCache::new(Duration::from_millis(1), 1 << 20);
        let loads = AtomicUsize::new(0);
        let slow = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, ApiError>(Bytes::from_static(b"[]"))
        };
        cache.get_or_load("X", "k", slow).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache.get_or_load("X", "k", slow).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1, "kept ~300 ms, not 1 ms");
        let fast = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ApiError>(Bytes::from_static(b"[]"))
        };
        cache.invalidate("X");
        cache.get_or_load("X", "k", fast).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache.get_or_load("X", "k", fast).await.unwrap();
        assert_eq!(
            loads.load(Ordering::SeqCst),
            3,
            "a fast answer lives for the TTL only"
        );
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_zero_ttl_disables() {
        let cache = SeriesCache::new(Duration::from_secs(60), 1 << 20);
        let r = cache
            .get_or_load("X", "k", || async {
                Err::<Bytes, _>(ApiError::NotFound("no".into()))
            })
            .await;
        assert!(r.is_err());
        let r = cache
            .get_or_load("X", "k", || async { Ok(Bytes::from_static(b"1")) })
            .await;
        assert_eq!(&r.unwrap()[..], b"1");

        let off = SeriesCache::new(Duration::ZERO, 1 << 20);
        let loads = AtomicUsize::new(0);
        for _ in 0..2 {
            off.get_or_load("X", "k", || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from_static(b"1"))
            })
            .await
            .unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }
}
