//! A per-key cache of successful answers with single flight: while one upstream call for a key
//! is running, every other caller for that key waits for it instead of calling upstream too.
//!
//! The upstream call runs in its own task, so a caller that gives up (client timeout, dropped
//! connection) neither cancels it for the others nor leaves a stale in-flight entry behind: the
//! task itself stores the answer and clears the entry.

use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

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

pub(crate) struct SingleFlightCache<V> {
    state: Arc<Mutex<State<V>>>,
    ttl: Duration,
    max_entries: usize,
}

struct State<V> {
    ready: HashMap<String, (Instant, V)>,
    in_flight: HashMap<String, Flight<V>>,
}

impl<V: Clone + Send + Sync + 'static> SingleFlightCache<V> {
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                ready: HashMap::new(),
                in_flight: HashMap::new(),
            })),
            ttl,
            max_entries: max_entries.max(1),
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
        let flight = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            match state.ready.get(key) {
                Some((expires, value)) if *expires > now => {
                    return (Ok(value.clone()), Source::Cache);
                }
                Some(_) => {
                    state.ready.remove(key);
                }
                None => {}
            }
            match state.in_flight.get(key) {
                Some(flight) => flight.clone(),
                None => {
                    let flight = self.start(key.to_owned(), fetch());
                    state.in_flight.insert(key.to_owned(), flight.clone());
                    flight
                }
            }
        };
        (flight.await, Source::Upstream)
    }

    /// Spawns the upstream call. The caller holds the state lock until the flight is
    /// registered, so the task's clean-up cannot run before the registration.
    fn start<Fut>(&self, key: String, fetch: Fut) -> Flight<V>
    where
        Fut: Future<Output = Result<V, QuoteError>> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        let ttl = self.ttl;
        let max_entries = self.max_entries;
        let task = tokio::spawn(async move {
            let result = fetch.await;
            let mut state = lock(&state);
            state.in_flight.remove(&key);
            if let (Ok(value), false) = (&result, ttl.is_zero()) {
                state.insert(key, Instant::now() + ttl, value.clone(), max_entries);
            }
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

    /// Number of cached entries (expired ones included until they are swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).ready.len()
    }
}

impl<V> State<V> {
    fn insert(&mut self, key: String, expires: Instant, value: V, max_entries: usize) {
        if self.ready.len() >= max_entries && !self.ready.contains_key(&key) {
            let now = Instant::now();
            self.ready.retain(|_, (e, _)| *e > now);
            if self.ready.len() >= max_entries {
                // Still full of live entries: drop the one closest to expiry.
                if let Some(oldest) = self
                    .ready
                    .iter()
                    .min_by_key(|(_, (e, _))| *e)
                    .map(|(k, _)| k.clone())
                {
                    self.ready.remove(&oldest);
                }
            }
        }
        self.ready.insert(key, (expires, value));
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

    #[tokio::test(start_paused = true)]
    async fn caches_successes_until_they_expire() {
        let cache = SingleFlightCache::new(Duration::from_secs(60), 100);
        let calls = Arc::new(AtomicUsize::new(0));
        let (r, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(1), Duration::ZERO))
            .await;
        assert_eq!((r, s), (Ok(1), Source::Upstream));
        let (r, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(2), Duration::ZERO))
            .await;
        assert_eq!((r, s), (Ok(1), Source::Cache));
        tokio::time::advance(Duration::from_secs(61)).await;
        let (r, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(3), Duration::ZERO))
            .await;
        assert_eq!((r, s), (Ok(3), Source::Upstream));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached() {
        let cache = SingleFlightCache::new(Duration::from_secs(60), 100);
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
        let cache = Arc::new(SingleFlightCache::new(Duration::ZERO, 100));
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
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_bounded() {
        let cache = SingleFlightCache::new(Duration::from_secs(60), 3);
        let calls = Arc::new(AtomicUsize::new(0));
        for key in ["a", "b", "c", "d", "e"] {
            let (r, _) = cache
                .get_or_fetch(key, counting(&calls, Ok(1), Duration::ZERO))
                .await;
            assert_eq!(r, Ok(1));
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(cache.len(), 3);
        let (_, s) = cache
            .get_or_fetch("e", counting(&calls, Ok(1), Duration::ZERO))
            .await;
        assert_eq!(s, Source::Cache);
        let (_, s) = cache
            .get_or_fetch("a", counting(&calls, Ok(1), Duration::ZERO))
            .await;
        assert_eq!(s, Source::Upstream);
    }
}
