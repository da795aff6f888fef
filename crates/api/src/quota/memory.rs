//! Quota logs in this process's memory: the default, exact for a single replica. With N replicas
//! behind a load balancer a caller could get up to N times the quota, hence Redis for replicas.
//! Also the fallback that keeps limits in force while Redis does not answer.

use super::window::{SlidingLog, Usage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Every this many attempts, logs that no longer hold a counted request are dropped, so memory
/// follows the callers of the last window, not every caller ever seen.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug)]
pub struct MemoryCounter {
    /// Instants are milliseconds since this (a monotonic clock: only differences matter here).
    epoch: Instant,
    logs: Mutex<HashMap<String, SlidingLog>>,
    attempts: AtomicU64,
}

impl Default for MemoryCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCounter {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            logs: Mutex::new(HashMap::new()),
            attempts: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key` now.
    pub fn attempt(&self, key: &str, limit: u64, window_ms: i64) -> Usage {
        let now_ms = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.attempt_at(key, limit, window_ms, now_ms)
    }

    /// Counts one request of `key` at `now_ms` (milliseconds on this counter's clock).
    pub fn attempt_at(&self, key: &str, limit: u64, window_ms: i64, now_ms: i64) -> Usage {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        if self.attempts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            logs.retain(|_, log| !log.is_idle(now_ms, window_ms));
        }
        if let Some(log) = logs.get_mut(key) {
            return log.attempt(now_ms, window_ms, limit);
        }
        logs.entry(key.to_owned())
            .or_default()
            .attempt(now_ms, window_ms, limit)
    }

    /// Callers currently tracked.
    pub fn tracked(&self) -> usize {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_counted_apart() {
        let counter = MemoryCounter::new();
        assert!(counter.attempt_at("a", 1, 1000, 0).admitted);
        assert!(!counter.attempt_at("a", 1, 1000, 10).admitted);
        assert!(counter.attempt_at("b", 1, 1000, 10).admitted);
        assert!(counter.attempt_at("a", 1, 1000, 1000).admitted);
        assert_eq!(counter.tracked(), 2);
    }

    #[test]
    fn idle_callers_are_forgotten() {
        let counter = MemoryCounter::new();
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
    fn the_real_clock_counts_too() {
        let counter = MemoryCounter::new();
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
