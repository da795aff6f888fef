//! The throttle's counts: in Redis when one is configured (shared by replicas), else, and while
//! Redis fails, in this replica's memory (asking Redis again once a second).

use crate::quota::fallback::REDIS_RETRY;
use crate::quota::redis::RedisCounter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Bound on counts kept in memory; past it the expired ones are dropped, then the oldest.
const MAX_MEMORY_KEYS: usize = 100_000;

/// Counters that live for a window from their first addition.
pub(super) struct Counts {
    window: Duration,
    redis: Option<RedisCounter>,
    memory: Mutex<HashMap<String, (u64, Instant)>>,
    started: Instant,
    /// When Redis's last failure was logged (seconds since `started`, plus 60).
    last_warning: AtomicU64,
    /// Until when Redis is not asked (milliseconds since `started`).
    redis_retry_at: AtomicU64,
}

impl Counts {
    pub(super) fn new(window: Duration, redis: Option<RedisCounter>) -> Counts {
        Counts {
            window,
            redis,
            memory: Mutex::new(HashMap::new()),
            started: Instant::now(),
            last_warning: AtomicU64::new(0),
            redis_retry_at: AtomicU64::new(0),
        }
    }

    /// Redis, unless it failed less than the quota's [`REDIS_RETRY`] ago: the replica counts alone
    /// meanwhile, so an outage costs one response timeout a second, not one per password check.
    fn redis(&self) -> Option<&RedisCounter> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let retry_at = self.redis_retry_at.load(Ordering::Relaxed);
        self.redis.as_ref().filter(|_| retry_at <= now)
    }

    pub(super) fn backend_name(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Adds `delta` to each key (a new key starts its window); the counts and time left after.
    pub(super) async fn add(&self, keys: &[&str], delta: i64) -> Vec<(u64, Duration)> {
        if keys.is_empty() {
            return Vec::new();
        }
        if let Some(redis) = self.redis() {
            let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
            let mut pipe = ::redis::pipe();
            for key in keys {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(0)
                    .arg("PX")
                    .arg(window_ms)
                    .arg("NX")
                    .ignore()
                    .incr(key, delta)
                    .pttl(key);
            }
            match redis.query::<Vec<i64>>(&pipe).await {
                // (count, ms left) per key; a key without expiry (never here) gets a window.
                Ok(answer) => {
                    return answer
                        .chunks(2)
                        .map(|row| {
                            let ttl = u64::try_from(row[1]).unwrap_or(window_ms);
                            (row[0].max(0).unsigned_abs(), Duration::from_millis(ttl))
                        })
                        .collect();
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        let mut map = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if map.len() >= MAX_MEMORY_KEYS {
            map.retain(|_, (_, until)| *until > now);
            let oldest = map.iter().min_by_key(|(_, (_, until))| *until);
            if let Some(oldest) = oldest.map(|(key, _)| key.clone()) {
                if map.len() >= MAX_MEMORY_KEYS {
                    map.remove(&oldest);
                }
            }
        }
        keys.iter()
            .map(|key| {
                let entry = map
                    .entry((*key).to_owned())
                    .or_insert((0, now + self.window));
                if entry.1 <= now {
                    *entry = (0, now + self.window);
                }
                entry.0 = entry.0.saturating_add_signed(delta);
                (entry.0, entry.1 - now)
            })
            .collect()
    }

    /// The counts of `keys` and the time left in their windows (0 for a key not counting).
    pub(super) async fn get(&self, keys: &[&str]) -> Vec<(u64, Duration)> {
        if keys.is_empty() {
            return Vec::new();
        }
        if let Some(redis) = self.redis() {
            let mut pipe = ::redis::pipe();
            for key in keys {
                pipe.cmd("GET").arg(*key).pttl(*key);
            }
            match redis.query::<Vec<Option<i64>>>(&pipe).await {
                Ok(answer) => {
                    return answer
                        .chunks(2)
                        .map(|row| {
                            let ttl = u64::try_from(row[1].unwrap_or(0)).unwrap_or(0);
                            let count = row[0].unwrap_or(0).max(0).unsigned_abs();
                            (count, Duration::from_millis(ttl))
                        })
                        .collect();
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        let map = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        keys.iter()
            .map(|key| match map.get(*key) {
                Some(&(count, until)) if until > now => (count, until - now),
                _ => (0, Duration::ZERO),
            })
            .collect()
    }

    /// Redis is left alone for a while; failures are logged once a minute at most.
    fn redis_failed(&self, e: &::redis::RedisError) {
        let elapsed = self.started.elapsed();
        let retry_at = u64::try_from((elapsed + REDIS_RETRY).as_millis()).unwrap_or(u64::MAX);
        self.redis_retry_at.store(retry_at, Ordering::Relaxed);
        let now = elapsed.as_secs() + 60;
        if self.last_warning.swap(now, Ordering::Relaxed) + 60 <= now {
            tracing::warn!(error = %e, "login throttle: Redis failed, counting in this replica");
        }
    }

    pub(super) async fn clear(&self, key: &str) {
        if let Some(redis) = self.redis() {
            let mut pipe = ::redis::pipe();
            pipe.del(key).ignore();
            match redis.query::<()>(&pipe).await {
                Ok(()) => return,
                Err(e) => self.redis_failed(&e),
            }
        }
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}
