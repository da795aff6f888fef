//! Quota logs in this process's memory: the default, exact for a single replica. With N replicas
//! behind a load balancer a caller could get up to N times the quota, hence Redis for replicas.
//! Also the fallback that keeps limits in force while Redis does not answer.

use super::window::{BucketLog, Usage};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Logs that no longer hold a counted request are dropped every this many attempts, or every as
/// many attempts as there are logs when there are more (a sweep visits every log, so its cost
/// per attempt stays constant however many callers there are), so memory follows the callers of
/// the last window, not every caller ever seen.
const SWEEP_EVERY: u64 = 4096;

/// The logs are spread over this many independently locked maps, so checks of different callers
/// on different threads rarely wait for each other (one map behind one lock made every check of
/// the process queue on it).
const SHARDS: usize = 16;

type Logs<K> = HashMap<K, BucketLog>;

/// Logs per key: a [`crate::quota::Subject`] in the API (a plain value, so a check allocates
/// nothing), any string in tests.
#[derive(Debug)]
pub struct MemoryCounter<K = String> {
    /// Instants are milliseconds since this (a monotonic clock: only differences matter here).
    epoch: Instant,
    /// Which shard holds a key (fixed per counter).
    hasher: RandomState,
    shards: Box<[Mutex<Logs<K>>]>,
    attempts: AtomicU64,
    /// The attempt that sweeps next (`u64::MAX` while one sweeps).
    next_sweep: AtomicU64,
}

impl<K: Hash + Eq> Default for MemoryCounter<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq> MemoryCounter<K> {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            attempts: AtomicU64::new(0),
            next_sweep: AtomicU64::new(SWEEP_EVERY),
        }
    }

    /// Counts one request of `key` now.
    pub fn attempt<Q>(&self, key: &Q, limit: u64, window_ms: i64) -> Usage
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now_ms = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.attempt_at(key, limit, window_ms, now_ms)
    }

    /// Counts one request of `key` at `now_ms` (milliseconds on this counter's clock).
    pub fn attempt_at<Q>(&self, key: &Q, limit: u64, window_ms: i64, now_ms: i64) -> Usage
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.next_sweep.load(Ordering::Acquire);
        if attempt >= due
            && self
                .next_sweep
                .compare_exchange(due, u64::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(attempt, now_ms, window_ms);
        }
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let mut logs = lock(&self.shards[shard]);
        if let Some(log) = logs.get_mut(key) {
            return log.attempt(now_ms, window_ms, limit);
        }
        logs.entry(key.to_owned())
            .or_default()
            .attempt(now_ms, window_ms, limit)
    }

    /// Drops the idle logs and schedules the next sweep.
    fn sweep(&self, attempt: u64, now_ms: i64, window_ms: i64) {
        let mut kept = 0;
        // One shard locked at a time: the sweep never holds up the whole process.
        for shard in &self.shards[..] {
            let mut logs = lock(shard);
            logs.retain(|_, log| !log.is_idle(now_ms, window_ms));
            kept += logs.len() as u64;
        }
        self.next_sweep
            .store(attempt + kept.max(SWEEP_EVERY), Ordering::Release);
    }

    /// Callers currently tracked.
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

fn lock<K>(shard: &Mutex<Logs<K>>) -> MutexGuard<'_, Logs<K>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_counted_apart() {
        let counter = MemoryCounter::<String>::new();
        assert!(counter.attempt_at("a", 1, 1000, 0).admitted);
        assert!(!counter.attempt_at("a", 1, 1000, 10).admitted);
        assert!(counter.attempt_at("b", 1, 1000, 10).admitted);
        // A 1 s window counts in milliseconds: the request at 0 counts until 1.001 s.
        assert!(!counter.attempt_at("a", 1, 1000, 1000).admitted);
        assert!(counter.attempt_at("a", 1, 1000, 1001).admitted);
        assert_eq!(counter.tracked(), 2);
    }

    #[test]
    fn idle_callers_are_forgotten() {
        let counter = MemoryCounter::<String>::new();
        for i in 0..10 {
            counter.attempt_at(&format!("old-{i}"), 5, 1000, 0);
        }
        // Enough attempts of one live caller, after the window, to trigger a sweep.
        for _ in 0..SWEEP_EVERY {
            counter.attempt_at("live", u64::MAX, 1000, 5000);
        }
        assert_eq!(counter.tracked(), 1);
    }

    #[test]
    fn sweeps_come_less_often_when_there_are_more_callers_than_the_period() {
        let counter = MemoryCounter::<String>::new();
        for i in 0..6000 {
            counter.attempt_at(&format!("k{i}"), 5, 1000, 0);
        }
        // The sweep at attempt 4096 kept 4095 live logs, fewer than the period: the next one is
        // the period later.
        assert_eq!(counter.next_sweep.load(Ordering::Relaxed), 8192);
        for _ in 6000..8191 {
            counter.attempt_at("live", u64::MAX, 1000, 5000);
        }
        assert_eq!(counter.tracked(), 6001, "no sweep before attempt 8192");
        counter.attempt_at("live", u64::MAX, 1000, 5000);
        assert_eq!(counter.tracked(), 1, "the idle ones are gone");
        assert_eq!(
            counter.next_sweep.load(Ordering::Relaxed),
            8192 + SWEEP_EVERY
        );

        // Many live callers: the sweep at 8192 keeps 8191, so the next waits 8191 attempts.
        let busy = MemoryCounter::<String>::new();
        for i in 0..10_000 {
            busy.attempt_at(&format!("k{i}"), 5, 1000, 0);
        }
        assert_eq!(busy.next_sweep.load(Ordering::Relaxed), 8192 + 8191);
    }

    #[test]
    fn threads_checking_one_caller_never_admit_more_than_the_limit() {
        let counter = MemoryCounter::<String>::new();
        let admitted: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..500)
                            .filter(|_| counter.attempt("hot", 1000, 86_400_000).admitted)
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(admitted, 1000);
        // Other callers, in whichever shard, are counted apart.
        for i in 0..64 {
            assert!(counter.attempt(&format!("k{i}"), 1, 86_400_000).admitted);
            assert!(!counter.attempt(&format!("k{i}"), 1, 86_400_000).admitted);
        }
        assert_eq!(counter.tracked(), 65);
    }

    #[test]
    fn the_real_clock_counts_too() {
        let counter = MemoryCounter::<String>::new();
        let first = counter.attempt("k", 2, 86_400_000);
        let second = counter.attempt("k", 2, 86_400_000);
        let third = counter.attempt("k", 2, 86_400_000);
        assert_eq!(
            (first.admitted, second.admitted, third.admitted),
            (true, true, false)
        );
        assert_eq!(third.used, 2);
    }
}
