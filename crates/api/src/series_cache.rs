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

use crate::ApiError;
use axum::body::Bytes;
use bourse_feed::FeedEvent;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// Bound on cached responses over all symbols; reaching it empties the cache.
const MAX_ENTRIES: usize = 10_000;
/// Larger bodies (huge raw ranges) are served but not kept.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest time an answer is kept, however long it took to compute.
pub const MAX_KEEP: Duration = Duration::from_secs(5);

struct Entry {
    body: Bytes,
    expires: Instant,
}

/// An answer, or the load in flight that will produce it.
struct Slot {
    body: OnceCell<Entry>,
}

type Slots = HashMap<String, Arc<Slot>>;

pub struct SeriesCache {
    ttl: Duration,
    /// symbol -> query key -> slot.
    symbols: RwLock<HashMap<String, Slots>>,
}

impl SeriesCache {
    pub fn new(ttl: Duration) -> SeriesCache {
        SeriesCache {
            ttl,
            symbols: RwLock::new(HashMap::new()),
        }
    }

    /// The cached body for (`symbol`, `key`), or the result of `load` (then cached when it
    /// succeeded). Errors are never cached.
    pub async fn get_or_load<F, Fut>(
        &self,
        symbol: &str,
        key: &str,
        load: F,
    ) -> Result<Bytes, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let slot = self.slot(symbol, key);
        let ttl = self.ttl;
        let entry = slot
            .body
            .get_or_try_init(|| async move {
                let started = Instant::now();
                let body = load().await?;
                let keep = ttl.max(started.elapsed()).min(MAX_KEEP.max(ttl));
                Ok::<_, ApiError>(Entry {
                    body,
                    expires: Instant::now() + keep,
                })
            })
            .await?;
        let body = entry.body.clone();
        if body.len() > MAX_BODY {
            self.forget(symbol, key, &slot);
        }
        Ok(body)
    }

    /// A load in flight is joined; a failed one (never filled) is retried by whoever joins it.
    fn fresh(&self, slot: &Slot) -> bool {
        slot.body.get().is_none_or(|e| Instant::now() < e.expires)
    }

    fn slot(&self, symbol: &str, key: &str) -> Arc<Slot> {
        if let Ok(map) = self.symbols.read() {
            if let Some(slot) = map.get(symbol).and_then(|s| s.get(key)) {
                if self.fresh(slot) {
                    return slot.clone();
                }
            }
        }
        let new = Arc::new(Slot {
            body: OnceCell::new(),
        });
        let Ok(mut map) = self.symbols.write() else {
            return new;
        };
        if let Some(slot) = map.get(symbol).and_then(|s| s.get(key)) {
            if self.fresh(slot) {
                return slot.clone();
            }
        }
        if map.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            map.clear();
        }
        map.entry(symbol.to_string())
            .or_default()
            .insert(key.to_string(), new.clone());
        new
    }

    fn forget(&self, symbol: &str, key: &str, slot: &Arc<Slot>) {
        if let Ok(mut map) = self.symbols.write() {
            if let Some(slots) = map.get_mut(symbol) {
                if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                    slots.remove(key);
                }
            }
        }
    }

    /// Drops every cached response of `symbol`.
    pub fn invalidate(&self, symbol: &str) {
        let cached = self
            .symbols
            .read()
            .map(|m| m.contains_key(symbol))
            .unwrap_or(true);
        if cached {
            if let Ok(mut map) = self.symbols.write() {
                map.remove(symbol);
            }
        }
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.symbols.write() {
            map.clear();
        }
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
        let cache = SeriesCache::new(Duration::from_secs(60));
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
        let cache = SeriesCache::new(Duration::from_millis(1));
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
        let cache = SeriesCache::new(Duration::from_secs(60));
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

        let off = SeriesCache::new(Duration::ZERO);
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
