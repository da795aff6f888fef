//! Counters in Redis, with this replica's own counter deciding while Redis does not answer, and
//! the callers Redis refused refused here until their release.
//!
//! When Redis does not answer (within [`super::redis::RESPONSE_TIMEOUT`]), the replica's memory
//! counter decides (counted in `bourse_quota_backend_errors_total`): quotas stay in force, per
//! replica, instead of either refusing everyone or letting everyone through. The counter's
//! [`super::circuit::Circuit`] sends requests straight to the memory counter while Redis fails,
//! probing it once a second, so an outage costs no request more than one timeout.

use super::memory::MemoryCounter;
use super::redis::RedisCounter;
use super::window::Usage;
use super::{Subject, BACKEND_ERRORS};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Bound on the refused callers remembered; past it, the expired ones are dropped, and if none
/// has expired new ones are not remembered (Redis still answers them).
const MAX_REFUSALS: usize = 65_536;

/// The Redis backend of a [`super::Quota`].
pub struct RedisWithFallback {
    pub redis: RedisCounter,
    fallback: MemoryCounter<Subject>,
    /// Instants here are milliseconds since this.
    started: Instant,
    refusals: Refusals,
}

impl RedisWithFallback {
    pub fn new(redis: RedisCounter) -> RedisWithFallback {
        RedisWithFallback {
            redis,
            fallback: MemoryCounter::new(),
            started: Instant::now(),
            refusals: Refusals::default(),
        }
    }

    /// Counts one request of `subject`, whose Redis key `key` makes.
    pub async fn check(
        &self,
        subject: &Subject,
        key: impl FnOnce() -> String,
        limit: u64,
        window_ms: i64,
    ) -> Usage {
        let now = self.now_ms();
        if let Some(refused) = self.refusals.lookup(subject, now) {
            return refused;
        }
        match self.redis.attempt(&key(), limit, window_ms).await {
            Ok(usage) => {
                self.refusals.note(subject, &usage, now);
                usage
            }
            Err(_) => {
                metrics::counter!(BACKEND_ERRORS).increment(1);
                self.fallback.attempt(subject, limit, window_ms)
            }
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// Callers Redis refused, answered here until their count drops below the limit: until then
/// every request of theirs would be refused too (no bucket of theirs leaves the window earlier,
/// and refused requests are not counted), so a caller hammering past its quota, the traffic
/// quotas exist for, costs Redis nothing until its release. Instants from Redis are moved to
/// this replica's clock from the instant the check was sent, so a refusal ends here at the
/// latest when it would in Redis, never later.
#[derive(Default)]
struct Refusals(Mutex<HashMap<Subject, Refusal>>);

/// Until when (ms on the replica's clock) a caller is refused, with the count Redis reported.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    until_ms: i64,
    used: u64,
}

impl Refusals {
    /// The refusal of `subject` at `now_ms`, if one is in force (an expired one is forgotten).
    fn lookup(&self, subject: &Subject, now_ms: i64) -> Option<Usage> {
        let mut refusals = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let refusal = *refusals.get(subject)?;
        if refusal.until_ms <= now_ms {
            refusals.remove(subject);
            return None;
        }
        Some(Usage {
            admitted: false,
            used: refusal.used,
            release_at_ms: Some(refusal.until_ms),
            now_ms,
        })
    }

    /// Remembers a refusal Redis answered to a check sent at `sent_ms`.
    fn note(&self, subject: &Subject, usage: &Usage, sent_ms: i64) {
        let (false, Some(release)) = (usage.admitted, usage.release_at_ms) else {
            return;
        };
        let until_ms = sent_ms.saturating_add(release.saturating_sub(usage.now_ms));
        let mut refusals = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if refusals.len() >= MAX_REFUSALS && !refusals.contains_key(subject) {
            refusals.retain(|_, refusal| refusal.until_ms > sent_ms);
            if refusals.len() >= MAX_REFUSALS {
                return;
            }
        }
        let used = usage.used;
        refusals.insert(*subject, Refusal { until_ms, used });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_refusal_is_answered_here_until_its_release() {
        let refusals = Refusals::default();
        let who = Subject::User(Uuid::nil());
        let refused = Usage {
            admitted: false,
            used: 5,
            release_at_ms: Some(2_000),
            now_ms: 1_000,
        };
        assert_eq!(refusals.lookup(&who, 0), None, "nothing here");
        // Sent at 100 ms here, answered by Redis at 1,000 ms of its own clock: the refusal
        // ends 1,000 ms after the sending here.
        refusals.note(&who, &refused, 100);
        let usage = refusals.lookup(&who, 600).expect("refused here");
        assert_eq!(
            (usage.admitted, usage.used, usage.release_at_ms),
            (false, 5, Some(1_100))
        );
        assert_eq!(refusals.lookup(&who, 1_100), None, "released");
        // An admission is not remembered.
        let admitted = Usage {
            admitted: true,
            ..refused
        };
        refusals.note(&who, &admitted, 1_200);
        assert_eq!(refusals.lookup(&who, 1_300), None);
    }

    #[tokio::test]
    async fn a_dead_redis_falls_back_to_this_replicas_counter_without_waiting_each_time() {
        // Nothing listens on port 1 of the loopback address.
        let backend = RedisWithFallback::new(RedisCounter::connect("redis://127.0.0.1:1").unwrap());
        let anon = Subject::address("192.0.2.9".parse().unwrap());
        let key = || "k".to_string();
        let day = 86_400_000;
        let verdicts = [
            backend.check(&anon, key, 2, day).await.admitted,
            backend.check(&anon, key, 2, day).await.admitted,
            backend.check(&anon, key, 2, day).await.admitted,
        ];
        assert_eq!(verdicts, [true, true, false]);
        // Only the first check asked Redis; the next probe is a second later.
        assert!(backend.redis.is_failing());
        assert_eq!(backend.redis.calls(), 0, "no connection, no call");
    }
}
