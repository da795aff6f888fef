//! The rolling-window arithmetic, free of I/O and clocks so it can be tested exactly.
//!
//! A caller's quota is a *sliding log*: the instants of the requests admitted in the last
//! window (a day). A request is admitted when fewer than `limit` are in the log; rejected
//! requests are not logged, so a log never holds more than `limit` entries. This is exactly "at
//! most N requests in any rolling day" (the seed's Django throttle works the same way), and it
//! makes the answers exact: the next request is possible when the right entry leaves the log.
//! The in-memory counter and the Redis script (which keeps the log in a sorted set) both
//! reduce to [`SlidingLog::attempt`]'s rule and report a [`Usage`]; [`Decision`] turns that into
//! the response headers.

use std::collections::VecDeque;

/// What one attempt did to a caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub admitted: bool,
    /// Entries in the window after the attempt (this request included when admitted).
    pub used: u64,
    /// When one more request becomes possible (or, when some are left, when the count next
    /// drops): the instant of the entry whose expiry brings the count below the limit, i.e. the
    /// entry at index `max(used - limit, 0)` of the log. `None` for an empty log.
    pub release_at_ms: Option<i64>,
    /// The clock the log is kept in (milliseconds; only differences matter).
    pub now_ms: i64,
}

/// The verdict for one request, with everything its response headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the count drops (`RateLimit-Reset`); also `Retry-After` when rejected.
    pub reset_secs: u64,
    /// The window, for `RateLimit-Policy`.
    pub window_secs: u64,
}

impl Decision {
    pub fn new(limit: u64, window_ms: i64, usage: Usage) -> Decision {
        let reset_ms = usage
            .release_at_ms
            .map_or(window_ms, |at| at + window_ms - usage.now_ms)
            .clamp(0, window_ms);
        Decision {
            admitted: usage.admitted,
            limit,
            remaining: limit.saturating_sub(usage.used),
            reset_secs: ceil_secs(reset_ms),
            window_secs: ceil_secs(window_ms),
        }
    }

    /// `Retry-After`: never 0, a client told "0" would retry at once and be refused again.
    pub fn retry_after(&self) -> u64 {
        self.reset_secs.max(1)
    }
}

fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// One caller's log of admitted instants, oldest first.
#[derive(Debug, Default, Clone)]
pub struct SlidingLog {
    admitted: VecDeque<i64>,
}

impl SlidingLog {
    /// Drops the entries that left the window (an entry at `t` counts while `now - t < window`),
    /// then admits the request if fewer than `limit` remain.
    pub fn attempt(&mut self, now_ms: i64, window_ms: i64, limit: u64) -> Usage {
        self.prune(now_ms, window_ms);
        let before = self.admitted.len() as u64;
        let admitted = before < limit;
        if admitted {
            // A clock that stepped back must not break the order the pruning relies on.
            let last = self.admitted.back().copied().unwrap_or(i64::MIN);
            self.admitted.push_back(now_ms.max(last));
        }
        let used = self.admitted.len() as u64;
        let index = used.saturating_sub(limit) as usize;
        Usage {
            admitted,
            used,
            release_at_ms: self.admitted.get(index).copied(),
            now_ms,
        }
    }

    /// True when nothing in the log still counts at `now_ms`: the log can be forgotten.
    pub fn is_idle(&self, now_ms: i64, window_ms: i64) -> bool {
        self.admitted
            .back()
            .is_none_or(|&t| t <= now_ms - window_ms)
    }

    fn prune(&mut self, now_ms: i64, window_ms: i64) {
        while self
            .admitted
            .front()
            .is_some_and(|&t| t <= now_ms - window_ms)
        {
            self.admitted.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn the_hundred_and_first_request_of_a_day_is_refused_until_the_first_leaves() {
        let mut log = SlidingLog::default();
        let start = 1_000_000;
        for i in 0..100 {
            let u = log.attempt(start + i * 1000, DAY, 100);
            assert!(u.admitted, "request {}", i + 1);
            assert_eq!(u.used, (i + 1) as u64);
            let d = Decision::new(100, DAY, u);
            assert_eq!(d.remaining, 99 - i as u64);
        }
        // One second after the 100th (which was 99 s after the first).
        let now = start + 100_000;
        let u = log.attempt(now, DAY, 100);
        assert!(!u.admitted);
        assert_eq!(u.used, 100);
        assert_eq!(u.release_at_ms, Some(start));
        let d = Decision::new(100, DAY, u);
        assert_eq!((d.remaining, d.reset_secs), (0, 86_400 - 100));
        assert_eq!(d.retry_after(), 86_300);
        assert_eq!(d.window_secs, 86_400);

        // Just before the first leaves: still refused; once it has left, one more fits.
        assert!(!log.attempt(start + DAY - 1, DAY, 100).admitted);
        let u = log.attempt(start + DAY, DAY, 100);
        assert!(u.admitted);
        assert_eq!(u.used, 100);
        assert!(!log.attempt(start + DAY, DAY, 100).admitted);
        // The second left a second later.
        assert!(log.attempt(start + DAY + 1000, DAY, 100).admitted);
    }

    #[test]
    fn reset_rounds_up_and_retry_after_is_never_zero() {
        let mut log = SlidingLog::default();
        assert!(log.attempt(0, 10_000, 1).admitted);
        let d = Decision::new(1, 10_000, log.attempt(9_999, 10_000, 1));
        assert!(!d.admitted);
        assert_eq!(d.reset_secs, 1, "1 ms left is 1 s, not 0");
        let d = Decision::new(1, 10_000, log.attempt(1, 10_000, 1));
        assert_eq!(d.reset_secs, 10);
        let empty = Usage {
            admitted: false,
            used: 0,
            release_at_ms: None,
            now_ms: 5,
        };
        let d = Decision::new(0, 10_000, empty);
        assert_eq!((d.reset_secs, d.retry_after()), (10, 10));
        let past = Usage {
            release_at_ms: Some(-20_000),
            ..empty
        };
        assert_eq!(Decision::new(1, 10_000, past).retry_after(), 1);
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_entries_to_leave() {
        let mut log = SlidingLog::default();
        for t in [0, 1_000, 2_000, 3_000] {
            assert!(log.attempt(t, 60_000, 10).admitted);
        }
        // The limit is now 2: three of the four must leave before one more fits, so the one at
        // 2 s decides.
        let u = log.attempt(4_000, 60_000, 2);
        assert!(!u.admitted);
        assert_eq!(u.release_at_ms, Some(2_000));
        assert_eq!(Decision::new(2, 60_000, u).reset_secs, 58);
    }

    #[test]
    fn remaining_reset_points_at_the_oldest_entry() {
        let mut log = SlidingLog::default();
        log.attempt(0, 60_000, 5);
        let u = log.attempt(30_000, 60_000, 5);
        assert_eq!(u.release_at_ms, Some(0));
        let d = Decision::new(5, 60_000, u);
        assert_eq!((d.remaining, d.reset_secs), (3, 30));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_log_ordered() {
        let mut log = SlidingLog::default();
        log.attempt(10_000, 60_000, 5);
        log.attempt(9_000, 60_000, 5);
        assert!(log.is_idle(70_000, 60_000));
        assert!(!log.is_idle(69_999, 60_000));
        assert!(SlidingLog::default().is_idle(0, 60_000));
    }
}
