//! Whether Redis is asked at all: one breaker for every user of a [`super::redis::RedisCounter`]
//! (the quotas and the login throttle share its connection), so an outage that one of them
//! notices spares the other its timeout too.
//!
//! Closed (Redis answers), every call goes to Redis. After a failure or a timeout the breaker
//! opens: calls fail at once, without a round trip, and their callers count in this replica's
//! memory. Once per [`REDIS_RETRY`] one call is let through as a probe; its answer closes the
//! breaker again. The transitions are logged here, once, rate-limited.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// How often Redis is probed while it is failing.
pub const REDIS_RETRY: Duration = Duration::from_secs(1);

/// Redis failures are logged at most once per this.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Circuit {
    /// Instants here are milliseconds since this.
    started: Instant,
    /// False after a failure, until a probe succeeds.
    healthy: AtomicBool,
    /// While unhealthy: when the next probe may go to Redis.
    probe_at_ms: AtomicI64,
    last_warning_ms: AtomicI64,
}

impl Default for Circuit {
    fn default() -> Circuit {
        Circuit {
            started: Instant::now(),
            healthy: AtomicBool::new(true),
            probe_at_ms: AtomicI64::new(0),
            last_warning_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl Circuit {
    /// Whether a call may go to Redis now: always while it answers; while it fails, one call
    /// per [`REDIS_RETRY`] (the others do not wait for it).
    pub fn admit(&self) -> bool {
        self.healthy.load(Ordering::Acquire) || {
            let now = self.now_ms();
            let due = self.probe_at_ms.load(Ordering::Acquire);
            now >= due
                && self
                    .probe_at_ms
                    .compare_exchange(due, now + retry_ms(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        }
    }

    /// Redis answered a call. A read, not a write, while it was answering already: this runs
    /// on every quota check.
    pub fn succeeded(&self) {
        if !self.healthy.load(Ordering::Acquire) && !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!("Redis answers again: quotas and login counts are shared again");
        }
    }

    /// A call failed or timed out: Redis is left alone until the next probe.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let now = self.now_ms();
        self.probe_at_ms.store(now + retry_ms(), Ordering::Release);
        self.healthy.store(false, Ordering::Release);
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let every = i64::try_from(WARN_EVERY.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(last) >= every
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, "Redis did not answer: quotas and login counts are this replica's own meanwhile");
        }
    }

    /// True while Redis is considered down.
    pub fn is_open(&self) -> bool {
        !self.healthy.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

fn retry_ms() -> i64 {
    i64::try_from(REDIS_RETRY.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failure_one_probe_per_retry_goes_through() {
        let circuit = Circuit::default();
        assert!(circuit.admit() && circuit.admit(), "closed: every call");
        circuit.failed(&"refused");
        assert!(circuit.is_open());
        assert!(!circuit.admit(), "open: no call until the probe is due");
        // Due now: the first caller takes the probe, the next one does not.
        circuit
            .probe_at_ms
            .store(circuit.now_ms(), Ordering::Release);
        assert!(circuit.admit());
        assert!(!circuit.admit());
        circuit.succeeded();
        assert!(!circuit.is_open() && circuit.admit(), "closed again");
    }
}
