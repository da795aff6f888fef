//! The rolling-window arithmetic, free of I/O and clocks so it can be tested exactly.
//!
//! A caller's quota is a log of the requests admitted in the last window (a day), counted in
//! *buckets* of a 86,400th of the window (a day: one second). A request admitted at `t` goes into
//! the bucket of `t` and counts until that bucket is a whole window old: from its end, so for
//! between one window and one window plus one bucket (a day and at most a second). A request
//! is admitted when fewer than `limit` are counted; refused requests are not counted. So no
//! rolling day ever holds more than `limit` admitted requests (a Django REST framework throttle
//! keeps the same rule with one entry per request), the answers stay exact to the second the
//! headers speak in, and a log holds at most one entry per second of the window however high
//! the limit (one entry per request, as before, cost memory and Redis time in proportion to
//! the limit). The in-memory counter and the Redis script both follow [`BucketLog::attempt`]'s
//! rule and report a [`Usage`]; [`Decision`] turns that into the response headers.

use std::collections::VecDeque;

/// Buckets per window: a day's window is counted in seconds.
pub const BUCKETS_PER_WINDOW: i64 = 86_400;

/// The length of one bucket of a window (at least a millisecond).
pub fn bucket_ms(window_ms: i64) -> i64 {
    (window_ms / BUCKETS_PER_WINDOW).max(1)
}

/// The bucket an instant falls in.
pub fn bucket_of(at_ms: i64, bucket_ms: i64) -> i64 {
    at_ms.div_euclid(bucket_ms)
}

/// When the requests of `bucket` stop counting: a window after the bucket's end.
pub fn expiry(bucket: i64, bucket_ms: i64, window_ms: i64) -> i64 {
    (bucket + 1)
        .saturating_mul(bucket_ms)
        .saturating_add(window_ms)
}

/// What one attempt did to a caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub admitted: bool,
    /// Requests counted after the attempt (this request included when admitted).
    pub used: u64,
    /// When the count next drops (the oldest bucket's expiry) or, for a refused request, when
    /// it drops below the limit (the expiry of the bucket whose leaving lets one more in).
    /// `None` for an empty log.
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
        // Nothing counts longer than a window and a bucket: a larger answer is a clock gone wrong.
        let longest = window_ms.saturating_add(bucket_ms(window_ms));
        let reset_ms = usage
            .release_at_ms
            .map_or(window_ms, |at| at.saturating_sub(usage.now_ms))
            .clamp(0, longest);
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

/// Milliseconds as whole seconds, rounded up (never negative).
pub(crate) fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// One caller's admitted requests per bucket, oldest first, and their total.
#[derive(Debug, Default, Clone)]
pub struct BucketLog {
    /// `(bucket, requests admitted in it)`, buckets increasing, counts above 0.
    buckets: VecDeque<(i64, u64)>,
    total: u64,
}

impl BucketLog {
    /// Drops the buckets that left the window, then admits the request if fewer than `limit`
    /// requests remain counted.
    pub fn attempt(&mut self, now_ms: i64, window_ms: i64, limit: u64) -> Usage {
        let step = bucket_ms(window_ms);
        self.prune(now_ms, window_ms, step);
        let admitted = self.total < limit;
        if admitted {
            let bucket = bucket_of(now_ms, step);
            match self.buckets.back_mut() {
                // A clock that stepped back adds to the newest bucket, keeping the order the
                // pruning relies on (and counting the request a little longer, never shorter).
                Some((last, count)) if *last >= bucket => *count += 1,
                _ => self.buckets.push_back((bucket, 1)),
            }
            self.total += 1;
        }
        let release = if admitted {
            self.buckets.front().map(|&(bucket, _)| bucket)
        } else {
            self.releasing_bucket(limit)
        };
        Usage {
            admitted,
            used: self.total,
            release_at_ms: release.map(|bucket| expiry(bucket, step, window_ms)),
            now_ms,
        }
    }

    /// The bucket whose expiry brings the count below `limit`: the first at which the requests
    /// counted up to and including it exceed `total - limit`.
    fn releasing_bucket(&self, limit: u64) -> Option<i64> {
        let excess = self.total.saturating_sub(limit);
        let mut leaving = 0;
        self.buckets.iter().find_map(|&(bucket, count)| {
            leaving += count;
            (leaving > excess).then_some(bucket)
        })
    }

    /// True when nothing in the log still counts at `now_ms`: the log can be forgotten.
    pub fn is_idle(&self, now_ms: i64, window_ms: i64) -> bool {
        let step = bucket_ms(window_ms);
        self.buckets
            .back()
            .is_none_or(|&(bucket, _)| expiry(bucket, step, window_ms) <= now_ms)
    }

    /// Requests counted, as of the last attempt.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Buckets held, as of the last attempt.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    fn prune(&mut self, now_ms: i64, window_ms: i64, step: i64) {
        while let Some(&(bucket, count)) = self.buckets.front() {
            if expiry(bucket, step, window_ms) > now_ms {
                break;
            }
            self.buckets.pop_front();
            self.total -= count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_day_is_counted_in_seconds() {
        assert_eq!(bucket_ms(DAY), 1000);
        assert_eq!(bucket_ms(60_000), 1, "never below a millisecond");
        assert_eq!(bucket_of(1_999, 1000), 1);
        assert_eq!(bucket_of(-1, 1000), -1);
        // A request at 1.999 s counts until 2 s + a day: a day and a millisecond.
        assert_eq!(expiry(bucket_of(1_999, 1000), 1000, DAY), 2_000 + DAY);
    }

    #[test]
    fn the_hundred_and_first_request_of_a_day_is_refused_until_the_first_leaves() {
        let mut log = BucketLog::default();
        let start = 1_000_000; // on a second's boundary
        for i in 0..100 {
            let u = log.attempt(start + i * 1000, DAY, 100);
            assert!(u.admitted, "request {}", i + 1);
            assert_eq!(u.used, (i + 1) as u64);
            assert_eq!(
                u.release_at_ms,
                Some(start + 1000 + DAY),
                "the first one's second"
            );
            let d = Decision::new(100, DAY, u);
            assert_eq!(d.remaining, 99 - i as u64);
        }
        // One second after the 100th (which was 99 s after the first).
        let now = start + 100_000;
        let u = log.attempt(now, DAY, 100);
        assert!(!u.admitted);
        assert_eq!(u.used, 100);
        assert_eq!(u.release_at_ms, Some(start + 1000 + DAY));
        let d = Decision::new(100, DAY, u);
        assert_eq!((d.remaining, d.reset_secs), (0, 86_400 - 99));
        assert_eq!(d.retry_after(), 86_301);
        assert_eq!(d.window_secs, 86_400);

        // A day after the first, the first still counts until its second is over; then one
        // more fits, and only one.
        assert!(!log.attempt(start + DAY, DAY, 100).admitted);
        assert!(!log.attempt(start + DAY + 999, DAY, 100).admitted);
        let u = log.attempt(start + DAY + 1000, DAY, 100);
        assert!(u.admitted);
        assert_eq!(u.used, 100);
        assert!(!log.attempt(start + DAY + 1000, DAY, 100).admitted);
        // The second left a second later.
        assert!(log.attempt(start + DAY + 2000, DAY, 100).admitted);
    }

    #[test]
    fn no_rolling_window_ever_holds_more_than_the_limit() {
        // Requests every 7 ms against a 10 s window (1 ms buckets) and a limit of 50: at every
        // admission, the admissions of the last window (ending at it) are at most 50.
        let window = 10_000;
        let mut log = BucketLog::default();
        let mut admitted_at = Vec::new();
        for i in 0..20_000 {
            let now = i * 7;
            if log.attempt(now, window, 50).admitted {
                admitted_at.push(now);
                let in_window = admitted_at.iter().filter(|&&t| now - t < window).count();
                assert!(in_window <= 50, "{in_window} at {now}");
            }
        }
        // And none is held back longer than a window and a bucket.
        assert!(admitted_at.windows(51).all(|w| w[50] - w[0] <= window + 8));
        assert!(log.buckets() <= 50);
    }

    #[test]
    fn requests_of_one_second_share_a_bucket() {
        let mut log = BucketLog::default();
        for i in 0..1000 {
            assert!(log.attempt(5_000 + i, DAY, u64::MAX).admitted);
        }
        assert_eq!((log.total(), log.buckets()), (1000, 1));
        log.attempt(6_000, DAY, u64::MAX);
        assert_eq!((log.total(), log.buckets()), (1001, 2));
    }

    #[test]
    fn reset_rounds_up_and_retry_after_is_never_zero() {
        let window = 86_400_000;
        let mut log = BucketLog::default();
        assert!(log.attempt(0, window, 1).admitted);
        // The request at 0 counts until 1 s + a day; 1 ms before that is 1 s, not 0.
        let d = Decision::new(1, window, log.attempt(window + 999, window, 1));
        assert!(!d.admitted);
        assert_eq!(d.reset_secs, 1);
        // At 1 ms the request still has its whole second and a day to go, less 1 ms.
        let d = Decision::new(1, window, log.attempt(1, window, 1));
        assert_eq!(d.reset_secs, 86_401);
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
        let far = Usage {
            release_at_ms: Some(i64::MAX),
            ..empty
        };
        assert_eq!(Decision::new(1, window, far).reset_secs, 86_401, "clamped");
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_buckets_to_leave() {
        let window = 60_000; // 1 ms buckets
        let mut log = BucketLog::default();
        for t in [0, 1_000, 2_000, 3_000] {
            assert!(log.attempt(t, window, 10).admitted);
        }
        // The limit is now 2: three of the four must leave before one more fits, so the bucket
        // at 2 s decides.
        let u = log.attempt(4_000, window, 2);
        assert!(!u.admitted);
        assert_eq!(u.release_at_ms, Some(2_001 + window));
        assert_eq!(Decision::new(2, window, u).reset_secs, 59);
    }

    #[test]
    fn remaining_and_reset_point_at_the_oldest_bucket() {
        let mut log = BucketLog::default();
        log.attempt(0, DAY, 5);
        let u = log.attempt(30_000, DAY, 5);
        assert_eq!(u.release_at_ms, Some(1_000 + DAY));
        let d = Decision::new(5, DAY, u);
        assert_eq!((d.remaining, d.reset_secs), (3, 86_400 - 29));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_log_ordered() {
        let window = 60_000;
        let mut log = BucketLog::default();
        log.attempt(10_000, window, 5);
        log.attempt(9_000, window, 5);
        assert_eq!(
            (log.total(), log.buckets()),
            (2, 1),
            "added to the newest bucket"
        );
        assert!(log.is_idle(70_001, window));
        assert!(!log.is_idle(70_000, window));
        assert!(BucketLog::default().is_idle(0, window));
    }
}
