//! The throttle's counts: in Redis when one is configured (shared by replicas), else, and while
//! Redis fails, in this replica's memory. The Redis counter's circuit, shared with the quotas,
//! decides when Redis is asked again, so an outage costs one response timeout a second, not one
//! per password check.

use crate::quota::redis::RedisCounter;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Bound on counts kept in memory; past it the expired ones are dropped, then the oldest.
const MAX_MEMORY_KEYS: usize = 100_000;

/// Counters that live for a window from their first addition.
pub(super) struct Counts {
    window: Duration,
    redis: Option<RedisCounter>,
    memory: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Counts {
    pub(super) fn new(window: Duration, redis: Option<RedisCounter>) -> Counts {
        Counts {
            window,
            redis,
            memory: Mutex::new(HashMap::new()),
        }
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
        if let Some(redis) = &self.redis {
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
            // (count, ms left) per key; a key without expiry (never here) gets a window. On an
            // error (logged by the counter's circuit), this replica counts meanwhile.
            if let Ok(answer) = redis.query::<Vec<i64>>(&pipe).await {
                return answer
                    .chunks(2)
                    .map(|row| {
                        let ttl = u64::try_from(row[1]).unwrap_or(window_ms);
                        (row[0].max(0).unsigned_abs(), Duration::from_millis(ttl))
                    })
                    .collect();
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
        if let Some(redis) = &self.redis {
            let mut pipe = ::redis::pipe();
            for key in keys {
                pipe.cmd("GET").arg(*key).pttl(*key);
            }
            if let Ok(answer) = redis.query::<Vec<Option<i64>>>(&pipe).await {
                return answer
                    .chunks(2)
                    .map(|row| {
                        let ttl = u64::try_from(row[1].unwrap_or(0)).unwrap_or(0);
                        let count = row[0].unwrap_or(0).max(0).unsigned_abs();
                        (count, Duration::from_millis(ttl))
                    })
                    .collect();
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

    pub(super) async fn clear(&self, key: &str) {
        if let Some(redis) = &self.redis {
            let mut pipe = ::redis::pipe();
            pipe.del(key).ignore();
            if redis.query::<()>(&pipe).await.is_ok() {
                return;
            }
        }
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}
