//! A per-key cache of successful answers with single flight: while one upstream call for a key
//! is running, every other caller for that key waits for it instead of calling upstream too.
//!
//! Answers are kept in a [`moka`] cache bounded by bytes (each answer weighs its JSON size) with
//! the TTL as lifetime; when full it evicts the least useful entries, never all of them.
//!
//! The upstream call runs in its own task, so a caller that gives up (client timeout, dropped
//! connection) neither cancels it for the others nor leaves a stale in-flight entry behind: the
//! task itself stores the answer and clears the entry. (moka's own `get_with` would let the next
//! waiter start a second call when the first caller goes away, hence the flights here.)

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::QuoteError;

type Flight<V> = Shared<BoxFuture<'static, Result<V, QuoteError>>>;

/// How an answer was obtained, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Served from the cache, no upstream call.
    Cache,
    /// From an upstream call (this caller's own or one it joined).
    Upstream,
}

/// A cached answer and its weight in bytes.
type Weighed<V> = (V, u32);

pub(crate) struct SingleFlightCache<V> {
    ready: Option<moka::sync::Cache<String, Weighed<V>>>,
    in_flight: Arc<Mutex<HashMap<String, Flight<V>>>>,
}

impl<V: Clone + Serialize + Send + Sync + 'static> SingleFlightCache<V> {
    /// A cache of at most `max_bytes` of answers, each kept `ttl` (zero: nothing is kept).
    pub(crate) fn new(ttl: Duration, max_bytes: u64) -> Self {
        let ready = (!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, (_, bytes): &Weighed<V>| {
                    bytes.saturating_add(key.len() as u32)
                })
                .time_to_live(ttl)
                .build()
        });
        Self {
            ready,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The cached answer for `key`, else the answer of the running or a new `fetch`.
    pub(crate) async fn get_or_fetch<Fut>(
        &self,
        key: &str,
        fetch: impl FnOnce() -> Fut,
    ) -> (Result<V, QuoteError>, Source)
    where
        Fut: Future<Output = Result<V, QuoteError>> + Send + 'static,
    {
        if let Some((value, _)) = self.ready.as_ref().and_then(|c| c.get(key)) {
            return (Ok(value), Source::Cache);
        }
        let flight = {
            let mut in_flight = lock(&self.in_flight);
            // Stored by a flight that ended since the look-up above.
            if let Some((value, _)) = self.ready.as_ref().and_then(|c| c.get(key)) {
                return (Ok(value), Source::Cache);
            }
            match in_flight.get(key) {
                Some(flight) => flight.clone(),
                None => {
                    let flight = self.start(key.to_owned(), fetch());
                    in_flight.insert(key.to_owned(), flight.clone());
                    flight
                }
            }
        };
        (flight.await, Source::Upstream)
    }

    /// Spawns the upstream call. The caller holds the in-flight lock until the flight is
    /// registered, so the task's clean-up cannot run before the registration.
    fn start<Fut>(&self, key: String, fetch: Fut) -> Flight<V>
    where
        Fut: Future<Output = Result<V, QuoteError>> + Send + 'static,
    {
        let in_flight = Arc::clone(&self.in_flight);
        let ready = self.ready.clone();
        let task = tokio::spawn(async move {
            let result = fetch.await;
            let mut in_flight = lock(&in_flight);
            if let (Ok(value), Some(ready)) = (&result, &ready) {
                let bytes = serde_json::to_vec(value).map_or(0, |b| b.len());
                let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                ready.insert(key.clone(), (value.clone(), bytes));
            }
            in_flight.remove(&key);
            result
        });
        task.map(|joined| {
            joined.unwrap_or_else(|e| {
                tracing::error!(error = %e, "quote lookup task failed");
                Err(QuoteError::Unavailable("quote lookup failed".into()))
            })
        })
        .boxed()
        .shared()
    }

    /// Bytes held by the cached answers (after pending evictions ran).
    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.ready.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }
}

/// The state is left consistent at every unlock, so a panic elsewhere does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(
        calls: &Arc<AtomicUsize>,
        answer: Result<u32, QuoteError>,
        delay: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u32, QuoteError>> {
        let calls = Arc::clone(calls);
        move || {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                answer
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn caches_successes_until_they_expire() {
        let cache = SingleFlightCache::new(Duration::from_millis(300), 1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let (r, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(1), Duration::ZERO))
            .await;
        assert_eq!((r, s), (Ok(1), Source::Upstream));
        let (r, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(2), Duration::ZERO))
            .await;
        assert_eq!((r, s), (Ok(1), Source::Cache));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (r, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(3), Duration::ZERO))
            .await;
        assert_eq!((r, s), (Ok(3), Source::Upstream));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache = SingleFlightCache::new(Duration::from_secs(60), 1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let err = Err(QuoteError::Timeout("slow".into()));
        let (r, _) = cache
            .get_or_fetch("a", counting(&calls, err, Duration::ZERO))
            .await;
        assert!(r.is_err());
        let (r, _) = cache
            .get_or_fetch("a", counting(&calls, Ok(1), Duration::ZERO))
            .await;
        assert_eq!(r, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_call_even_if_the_first_gives_up() {
        let cache = Arc::new(SingleFlightCache::new(Duration::ZERO, 1 << 20));
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let cache = Arc::clone(&cache);
            let f = counting(&calls, Ok(7), Duration::from_secs(1));
            tokio::spawn(async move { cache.get_or_fetch("a", f).await })
        };
        tokio::task::yield_now().await;
        let second = {
            let cache = Arc::clone(&cache);
            let f = counting(&calls, Ok(8), Duration::from_secs(1));
            tokio::spawn(async move { cache.get_or_fetch("a", f).await })
        };
        tokio::task::yield_now().await;
        first.abort();
        let (r, s) = second.await.unwrap();
        assert_eq!((r, s), (Ok(7), Source::Upstream));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // ttl zero: nothing kept, the next call goes upstream again.
        let (r, _) = cache
            .get_or_fetch("a", counting(&calls, Ok(9), Duration::ZERO))
            .await;
        assert_eq!(r, Ok(9));
        assert_eq!(cache.weight(), 0);
    }

    /// A scan of many symbols keeps at most the configured bytes, and does not empty the cache:
    /// answers still fit are served from it.
    #[tokio::test]
    async fn size_is_bounded_by_bytes() {
        let cache = SingleFlightCache::new(Duration::from_secs(60), 200);
        let calls = Arc::new(AtomicUsize::new(0));
        for i in 0..100 {
            let key = format!("k{i:03}");
            let (r, _) = cache
                .get_or_fetch(&key, counting(&calls, Ok(i), Duration::ZERO))
                .await;
            assert_eq!(r, Ok(i));
        }
        // Each entry weighs its key (4 bytes) and its JSON (1 to 2 bytes).
        let weight = cache.weight();
        assert!((1..=200).contains(&weight), "{weight} bytes kept");
        let hits = futures::future::join_all((0..100).map(|i| {
            let key = format!("k{i:03}");
            let cache = &cache;
            let calls = &calls;
            async move {
                cache
                    .get_or_fetch(&key, counting(calls, Ok(i), Duration::ZERO))
                    .await
                    .1
            }
        }))
        .await;
        let cached = hits.iter().filter(|s| **s == Source::Cache).count();
        assert!(cached >= 20, "{cached} answers still cached");
    }
}
