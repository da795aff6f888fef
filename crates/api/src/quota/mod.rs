//! Per-day quotas: anonymous callers per client address, authenticated callers per
//! user, over a rolling day, spent by the [`crate::gate`] in front of the routes.
//!
//! - [`window`]: the rolling-day rule, counted per second, and the header arithmetic (pure).
//! - [`memory`]: logs in this process (one replica), [`redis`]: logs in Redis (any number of
//!   replicas; atomic; at most one round trip per request, the checks that arrive while a call
//!   is in flight go together in the next).
//!
//! Every tracked request counts, whatever its answer (a 401 counts against the address);
//! health, readiness, metrics, docs and the live stream are not tracked
//! ([`crate::caller::is_untracked`]). Counted responses carry `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`; a refused request gets 429
//! with `Retry-After` and the body of docs/api.md.
//!
//! A caller Redis has refused is refused by the replica itself until its release, and a busy
//! caller far from its limit is admitted from a reservation (see `Local`): so neither a flood
//! past a quota nor a hot caller within it costs Redis a call per batch of requests.
//!
//! When Redis does not answer (within [`redis::RESPONSE_TIMEOUT`]), the replica's own memory
//! counter decides (logged, and counted in `bourse_quota_backend_errors_total`): quotas stay in
//! force, per replica, instead of either refusing everyone or letting everyone through. After a
//! failure, requests go straight to the memory counter and one request per
//! [`REDIS_RETRY`] probes Redis, so an outage costs no request more than one timeout.

pub mod memory;
pub mod redis;
pub mod window;

use crate::caller::{AddrKey, Caller};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use memory::MemoryCounter;
use redis::{RedisCounter, Unused};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;
use window::{Decision, Usage};

/// Requests refused with 429, by `caller` (`anonymous` or `user`).
pub const REJECTIONS: &str = "bourse_quota_rejections_total";
/// Quota checks that Redis failed to answer (the replica's memory counter decided instead).
pub const BACKEND_ERRORS: &str = "bourse_quota_backend_errors_total";

/// The window: a rolling day.
pub const DAY: Duration = Duration::from_secs(86_400);

/// Describes the quota metrics and registers their series at zero.
pub fn describe() {
    metrics::describe_counter!(
        REJECTIONS,
        metrics::Unit::Count,
        "Requests refused with 429 because a per-day quota was used up, by caller kind (anonymous: per client address; user: per user)."
    );
    metrics::describe_counter!(
        BACKEND_ERRORS,
        metrics::Unit::Count,
        "Quota checks decided by the replica's own counter because Redis failed or is being given time to recover."
    );
    for caller in ["anonymous", "user"] {
        metrics::counter!(REJECTIONS, "caller" => caller).increment(0);
    }
    metrics::counter!(BACKEND_ERRORS).increment(0);
}

/// Limits and where the counters live.
#[derive(Debug, Clone)]
pub struct QuotaConfig {
    /// Requests per window per client address; 0 = unlimited.
    pub anonymous: u64,
    /// Requests per window per user; 0 = unlimited.
    pub user: u64,
    pub window: Duration,
    /// `redis://…`: counters shared by all replicas; `None`: in this process.
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys (`bourse:quota:` by contract; tests use their own).
    pub redis_prefix: String,
    /// Whether busy callers far from their limit are served from reservations (see
    /// [`redis::Grant`]); without them every batch of checks is a script call, and other
    /// replicas never see a count that includes requests not made yet.
    pub reservations: bool,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            anonymous: 100,
            user: 1000,
            window: DAY,
            redis_url: None,
            redis_prefix: "bourse:quota:".into(),
            reservations: true,
        }
    }
}

/// Whose quota a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Per client address (IPv6 per /64).
    Anonymous(AddrKey),
    User(Uuid),
}

impl Subject {
    /// The caller of a request: the user when the credentials are valid, else the address.
    pub fn of(caller: &Caller) -> Subject {
        match caller.user() {
            Some(user) => Subject::User(user.id),
            None => Subject::Anonymous(AddrKey::of(caller.addr)),
        }
    }

    /// An anonymous caller at `ip`.
    pub fn address(ip: IpAddr) -> Subject {
        Subject::Anonymous(AddrKey::of(Some(ip)))
    }

    fn label(&self) -> &'static str {
        match self {
            Subject::Anonymous(_) => "anonymous",
            Subject::User(_) => "user",
        }
    }
}

enum Backend {
    Memory(MemoryCounter<Subject>),
    Redis {
        redis: RedisCounter,
        fallback: MemoryCounter<Subject>,
        /// False after a failure, until a probe succeeds.
        healthy: AtomicBool,
        /// While unhealthy: when (ms since `started`) the next probe may go to Redis.
        probe_at_ms: AtomicI64,
        local: Arc<Local>,
    },
}

/// What this replica answers by itself for some callers, without asking Redis:
///
/// - callers that Redis refused, until their count drops below the limit. Until then every
///   request of theirs would be refused too (no bucket of theirs leaves the window earlier, and
///   refused requests are not counted), so a caller hammering past its quota, the traffic
///   quotas exist for, costs Redis nothing until its release;
/// - callers holding a reservation ([`redis::Grant`]): requests Redis counted ahead of time for
///   a busy caller with plenty of quota left, admitted here until the end of their second; the
///   unused ones go back to Redis then (with the next call, or the sweeper's).
///
/// Instants from Redis are moved to this replica's clock from the instant the check was sent,
/// so a refusal or a reservation ends here at the latest when it would in Redis, never later.
struct Local {
    /// Instants here are milliseconds since this.
    started: Instant,
    slots: Mutex<HashMap<Subject, Slot>>,
    /// Whether the task that gives back the reservations nobody used has started.
    sweeping: AtomicBool,
}

#[derive(Debug)]
enum Slot {
    Refused { until_ms: i64, used: u64 },
    Lease(Lease),
}

/// A reservation being spent.
#[derive(Debug)]
struct Lease {
    key: String,
    /// The bucket the reserved requests are counted in.
    bucket: i64,
    /// Reserved, and not yet admitted.
    left: u64,
    size: u64,
    /// The count the last request admitted from it saw.
    used: u64,
    /// When it ends (the end of its second in Redis).
    until_ms: i64,
    /// The oldest bucket's expiry, for `RateLimit-Reset`.
    release_ms: Option<i64>,
}

impl Lease {
    /// What is left of it, to be given back (the lease is being dropped: its key is taken).
    fn unused(&mut self) -> Option<Unused> {
        (self.left > 0).then(|| Unused {
            key: std::mem::take(&mut self.key),
            bucket: self.bucket,
            requests: self.left,
        })
    }
}

/// What [`Local::lookup`] found.
enum Lookup {
    /// Decided here.
    Answer(Usage),
    /// Ask Redis, for a reservation of about `hint` requests; first give back what an ended
    /// lease left.
    Ask {
        hint: u64,
        give_back: Option<Unused>,
    },
}

/// Bound on the callers remembered; past it, the expired ones are dropped, and if none has
/// expired new ones are not remembered (Redis still answers them).
const MAX_LOCAL: usize = 65_536;

/// False when `slots` holds [`MAX_LOCAL`] callers, none of them `subject`, and none whose
/// refusal has expired (leases are not dropped: the sweeper gives them back).
fn make_room(slots: &mut HashMap<Subject, Slot>, subject: &Subject, now_ms: i64) -> bool {
    if slots.len() < MAX_LOCAL || slots.contains_key(subject) {
        return true;
    }
    slots.retain(|_, slot| match slot {
        Slot::Refused { until_ms, .. } => *until_ms > now_ms,
        Slot::Lease(_) => true,
    });
    slots.len() < MAX_LOCAL
}

/// How often ended reservations are given back when their caller sends nothing more.
const SWEEP_EVERY_MS: u64 = 250;

impl Local {
    fn new(started: Instant) -> Local {
        Local {
            started,
            slots: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lookup(&self, subject: &Subject, now_ms: i64) -> Lookup {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let ask = |hint| Lookup::Ask {
            hint,
            give_back: None,
        };
        let Some(slot) = slots.get_mut(subject) else {
            return ask(0);
        };
        let lookup = match slot {
            Slot::Refused { until_ms, used } if *until_ms > now_ms => {
                return Lookup::Answer(Usage {
                    admitted: false,
                    used: *used,
                    release_at_ms: Some(*until_ms),
                    now_ms,
                })
            }
            Slot::Refused { .. } => ask(0),
            Slot::Lease(lease) if lease.left > 0 && now_ms < lease.until_ms => {
                lease.left -= 1;
                lease.used += 1;
                return Lookup::Answer(Usage {
                    admitted: true,
                    used: lease.used,
                    release_at_ms: lease.release_ms,
                    now_ms,
                });
            }
            // Used up within its second: the caller is busier than the reservation, ask for
            // twice as much. Ended with some left: ask for twice what was used.
            Slot::Lease(lease) => Lookup::Ask {
                hint: 2 * (lease.size - lease.left),
                give_back: lease.unused(),
            },
        };
        slots.remove(subject);
        lookup
    }

    /// Remembers a refusal Redis answered to a check sent at `sent_ms`.
    fn note_refusal(&self, subject: &Subject, usage: &Usage, sent_ms: i64) {
        let (false, Some(release)) = (usage.admitted, usage.release_at_ms) else {
            return;
        };
        let until_ms = sent_ms.saturating_add(release.saturating_sub(usage.now_ms));
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // A lease taken meanwhile (by a check of another call) stays: its requests are counted.
        if matches!(slots.get(subject), Some(Slot::Lease(_)))
            || !make_room(&mut slots, subject, sent_ms)
        {
            return;
        }
        slots.insert(
            *subject,
            Slot::Refused {
                until_ms,
                used: usage.used,
            },
        );
    }

    /// Takes over a reservation granted to a check sent at `sent_ms`; returns what must go back
    /// to Redis at once (a lease of an earlier second it replaces).
    fn take_lease(
        &self,
        subject: &Subject,
        key: String,
        grant: &redis::Grant,
        sent_ms: i64,
    ) -> Option<Unused> {
        let local = |at: i64| sent_ms.saturating_add(at.saturating_sub(grant.now_ms));
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Slot::Lease(lease)) = slots.get_mut(subject) {
            if lease.bucket == grant.bucket {
                // Two calls in flight both brought one: one lease.
                lease.left += grant.reserved;
                lease.size += grant.reserved;
                return None;
            }
        }
        let mut lease = Lease {
            key,
            bucket: grant.bucket,
            left: grant.reserved,
            size: grant.reserved,
            used: grant.used,
            until_ms: local(grant.valid_until_ms),
            release_ms: (grant.oldest_ms >= 0).then(|| local(grant.oldest_ms)),
        };
        if !make_room(&mut slots, subject, sent_ms) {
            return lease.unused();
        }
        match slots.insert(*subject, Slot::Lease(lease)) {
            Some(Slot::Lease(mut old)) => old.unused(),
            _ => None,
        }
    }

    /// Removes the leases that ended and the refusals that expired; returns what the leases
    /// left, to be given back.
    fn sweep(&self, now_ms: i64) -> Vec<Unused> {
        let mut ended = Vec::new();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| match slot {
            Slot::Refused { until_ms, .. } => *until_ms > now_ms,
            Slot::Lease(lease) if now_ms < lease.until_ms => true,
            Slot::Lease(lease) => {
                ended.extend(lease.unused());
                false
            }
        });
        ended
    }
}

/// How often Redis is probed while it is failing.
pub const REDIS_RETRY: Duration = Duration::from_secs(1);

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The headers that only depend on the kind of caller, made once.
#[derive(Debug)]
struct Fixed {
    limit: HeaderValue,
    /// `100;w=86400`
    policy: HeaderValue,
}

impl Fixed {
    fn new(limit: u64, window_ms: i64) -> Fixed {
        let window_secs = window::ceil_secs(window_ms);
        Fixed {
            limit: HeaderValue::from(limit),
            policy: HeaderValue::try_from(format!("{limit};w={window_secs}"))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        }
    }
}

/// The quota checker the gate consults.
pub struct Quota {
    anonymous: u64,
    user: u64,
    fixed: [Fixed; 2],
    window_ms: i64,
    prefix: String,
    reservations: bool,
    backend: Backend,
    /// Redis failures are logged at most once per [`WARN_EVERY`].
    started: Instant,
    last_warning_ms: AtomicI64,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("anonymous", &self.anonymous)
            .field("user", &self.user)
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Quota {
    /// `Ok(None)` when both limits are 0 (nothing to enforce: no layer at all); an error only for
    /// a malformed Redis URL.
    pub fn new(config: &QuotaConfig) -> Result<Option<Quota>, ::redis::RedisError> {
        if config.anonymous == 0 && config.user == 0 {
            return Ok(None);
        }
        let started = Instant::now();
        let backend = match &config.redis_url {
            Some(url) => Backend::Redis {
                redis: RedisCounter::connect(url)?,
                fallback: MemoryCounter::new(),
                healthy: AtomicBool::new(true),
                probe_at_ms: AtomicI64::new(0),
                local: Arc::new(Local::new(started)),
            },
            None => Backend::Memory(MemoryCounter::new()),
        };
        let window_ms = i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
        Ok(Some(Quota {
            anonymous: config.anonymous,
            user: config.user,
            fixed: [
                Fixed::new(config.anonymous, window_ms),
                Fixed::new(config.user, window_ms),
            ],
            window_ms,
            prefix: config.redis_prefix.clone(),
            reservations: config.reservations,
            backend,
            started,
            last_warning_ms: AtomicI64::new(i64::MIN),
        }))
    }

    /// The Redis counter, whose connection other users of the same Redis share.
    pub fn redis(&self) -> Option<&RedisCounter> {
        match &self.backend {
            Backend::Redis { redis, .. } => Some(redis),
            Backend::Memory(_) => None,
        }
    }

    /// `memory` or `redis`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis { .. } => "redis",
        }
    }

    pub fn limit(&self, subject: &Subject) -> u64 {
        match subject {
            Subject::Anonymous(_) => self.anonymous,
            Subject::User(_) => self.user,
        }
    }

    /// The Redis key of a subject: `<prefix>anon:<address>` or `<prefix>user:<id>`.
    pub fn key(&self, subject: &Subject) -> String {
        match subject {
            Subject::Anonymous(addr) => format!("{}anon:{addr}", self.prefix),
            Subject::User(id) => format!("{}user:{id}", self.prefix),
        }
    }

    /// `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds until the count drops) and `-Policy`
    /// (`100;w=86400`), as in the IETF RateLimit header fields draft.
    pub fn write_headers(&self, subject: &Subject, decision: &Decision, headers: &mut HeaderMap) {
        let fixed = match subject {
            Subject::Anonymous(_) => &self.fixed[0],
            Subject::User(_) => &self.fixed[1],
        };
        headers.insert(LIMIT.clone(), fixed.limit.clone());
        headers.insert(REMAINING.clone(), HeaderValue::from(decision.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(decision.reset_secs));
        headers.insert(POLICY.clone(), fixed.policy.clone());
    }

    /// Counts one request of `subject`; `None` when its kind of caller is unlimited.
    pub async fn check(&self, subject: &Subject) -> Option<Decision> {
        let limit = self.limit(subject);
        if limit == 0 {
            return None;
        }
        let usage = match &self.backend {
            Backend::Memory(counter) => counter.attempt(subject, limit, self.window_ms),
            Backend::Redis {
                redis,
                fallback,
                healthy,
                probe_at_ms,
                local,
            } => 'usage: {
                let now = local.now_ms();
                let hint = match local.lookup(subject, now) {
                    Lookup::Answer(usage) => break 'usage usage,
                    Lookup::Ask { hint, give_back } => {
                        if let Some(unused) = give_back {
                            redis.give_back(unused);
                        }
                        hint
                    }
                };
                let retry = i64::try_from(REDIS_RETRY.as_millis()).unwrap_or(i64::MAX);
                let ask_redis = healthy.load(Ordering::Acquire) || {
                    // Unhealthy: one request claims the next probe, the others do not wait.
                    let due = probe_at_ms.load(Ordering::Acquire);
                    now >= due
                        && probe_at_ms
                            .compare_exchange(due, now + retry, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                };
                let answer = if ask_redis {
                    match tokio::time::timeout(
                        redis::RESPONSE_TIMEOUT,
                        redis.attempt_or_reserve(
                            &self.key(subject),
                            limit,
                            self.window_ms,
                            self.reservations.then_some(hint),
                        ),
                    )
                    .await
                    {
                        Ok(Ok(answer)) => Ok(answer),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no answer in time".to_string()),
                    }
                } else {
                    Err(String::new())
                };
                match answer {
                    Ok((usage, grant)) => {
                        if !healthy.swap(true, Ordering::AcqRel) {
                            tracing::info!("quota: Redis answers again; counters are shared");
                        }
                        local.note_refusal(subject, &usage, now);
                        if let Some(grant) = grant {
                            let key = self.key(subject);
                            if let Some(unused) = local.take_lease(subject, key, &grant, now) {
                                redis.give_back(unused);
                            }
                            self.start_sweeper(local, redis);
                        }
                        usage
                    }
                    Err(error) => {
                        if ask_redis {
                            probe_at_ms.store(now + retry, Ordering::Release);
                            healthy.store(false, Ordering::Release);
                            self.warn(&error);
                        }
                        metrics::counter!(BACKEND_ERRORS).increment(1);
                        fallback.attempt(subject, limit, self.window_ms)
                    }
                }
            }
        };
        let decision = Decision::new(limit, self.window_ms, usage);
        if !decision.admitted {
            metrics::counter!(REJECTIONS, "caller" => subject.label()).increment(1);
        }
        Some(decision)
    }

    /// Starts, once, the task that gives back what ended reservations left when their callers
    /// send nothing more. It ends with the quota.
    fn start_sweeper(&self, local: &Arc<Local>, redis: &RedisCounter) {
        if local.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let local = Arc::downgrade(local);
        let redis = redis.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_EVERY_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(local) = local.upgrade() else {
                    return;
                };
                for unused in local.sweep(local.now_ms()) {
                    redis.give_back(unused);
                }
            }
        });
    }

    /// Gives back to Redis every reservation not used yet, at shutdown: otherwise they would
    /// stay counted for a day, requests the caller never made. Returns how many went back.
    pub async fn give_back_reservations(&self) -> u64 {
        let Backend::Redis { redis, local, .. } = &self.backend else {
            return 0;
        };
        let unused = local.sweep(i64::MAX);
        let requests = unused.iter().map(|u| u.requests).sum();
        match tokio::time::timeout(redis::RESPONSE_TIMEOUT, redis.give_back_now(unused)).await {
            Ok(Ok(())) => requests,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, requests, "quota: unused reservations could not be given back; they stay counted until they leave the window");
                0
            }
            Err(_) => {
                tracing::warn!(requests, "quota: Redis did not take back the unused reservations in time; they stay counted until they leave the window");
                0
            }
        }
    }

    /// Script calls made to Redis so far (`None` with counters in memory).
    pub fn redis_calls(&self) -> Option<u64> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis { redis, .. } => Some(redis.calls()),
        }
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn warn(&self, error: &str) {
        let now = self.elapsed_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let every = i64::try_from(WARN_EVERY.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(last) >= every
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %error, "quota: Redis did not answer; this replica's own counters decide meanwhile");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;
    use bourse_store::users::{Role, User};

    fn config(anonymous: u64, user: u64) -> QuotaConfig {
        QuotaConfig {
            anonymous,
            user,
            ..QuotaConfig::default()
        }
    }

    #[test]
    fn no_limits_no_quota() {
        assert!(Quota::new(&config(0, 0)).unwrap().is_none());
        assert!(Quota::new(&config(1, 0)).unwrap().is_some());
        let bad = QuotaConfig {
            redis_url: Some("not a url".into()),
            ..config(1, 1)
        };
        assert!(Quota::new(&bad).is_err());
    }

    #[test]
    fn subjects_and_keys() {
        let quota = Quota::new(&config(100, 1000)).unwrap().unwrap();
        let user = User {
            id: Uuid::nil(),
            username: "u".into(),
            email: None,
            role: Role::User,
            active: true,
            token_version: 0,
        };
        let addr = Some("192.0.2.1".parse().unwrap());
        let valid = Caller {
            addr,
            credential: Credential::Valid(user),
        };
        let invalid = Caller {
            addr,
            credential: Credential::Invalid,
        };
        let user_subject = Subject::of(&valid);
        let anon_subject = Subject::of(&invalid);
        assert_eq!(user_subject, Subject::User(Uuid::nil()));
        assert_eq!(anon_subject, Subject::address("192.0.2.1".parse().unwrap()));
        assert_eq!(quota.limit(&user_subject), 1000);
        assert_eq!(quota.limit(&anon_subject), 100);
        assert_eq!(
            quota.key(&user_subject),
            "bourse:quota:user:00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(quota.key(&anon_subject), "bourse:quota:anon:192.0.2.1");
        assert_eq!(quota.backend_name(), "memory");
    }

    #[tokio::test]
    async fn an_unlimited_kind_is_not_counted() {
        let quota = Quota::new(&config(0, 1)).unwrap().unwrap();
        let anon = Subject::address("192.0.2.8".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(quota.check(&anon).await, None);
        }
        let user = Subject::User(Uuid::nil());
        let first = quota.check(&user).await.unwrap();
        assert!(first.admitted);
        assert_eq!((first.limit, first.remaining), (1, 0));
        assert!(!quota.check(&user).await.unwrap().admitted);
    }

    fn grant(reserved: u64, bucket: i64) -> redis::Grant {
        // Redis's clock is 1,000,000 ms ahead of this replica's.
        redis::Grant {
            reserved,
            bucket,
            used: 10,
            oldest_ms: 1_000_000 + 86_400_500,
            now_ms: 1_000_000 + 500,
            valid_until_ms: 1_000_000 + 1_000,
        }
    }

    fn unused(bucket: i64, requests: u64) -> Unused {
        Unused {
            key: "k".into(),
            bucket,
            requests,
        }
    }

    fn admitted(lookup: Lookup) -> Usage {
        match lookup {
            Lookup::Answer(usage) if usage.admitted => usage,
            Lookup::Answer(_) => panic!("refused"),
            Lookup::Ask { .. } => panic!("sent to Redis"),
        }
    }

    fn asked(lookup: Lookup) -> (u64, Option<Unused>) {
        match lookup {
            Lookup::Ask { hint, give_back } => (hint, give_back),
            Lookup::Answer(usage) => panic!("answered here: {usage:?}"),
        }
    }

    #[test]
    fn a_lease_admits_its_requests_until_its_second_ends() {
        let local = Local::new(Instant::now());
        let who = Subject::User(Uuid::nil());
        assert_eq!(asked(local.lookup(&who, 0)), (0, None), "nothing here");
        // Sent at 400 ms here, answered by Redis at 500 ms of its own second: the lease ends
        // 500 ms after the sending here (never later than in Redis).
        assert_eq!(local.take_lease(&who, "k".into(), &grant(3, 7), 400), None);
        for i in 1..=3 {
            let usage = admitted(local.lookup(&who, 800));
            assert_eq!(usage.used, 10 + i);
            assert_eq!(usage.release_at_ms, Some(400 + 86_400_000));
        }
        // Used up within its second: ask Redis for twice as many.
        assert_eq!(asked(local.lookup(&who, 850)), (6, None));
        assert_eq!(asked(local.lookup(&who, 850)), (0, None), "forgotten");

        // Another lease; one used; it ends at 900 ms here: two go back, and twice the one used
        // is asked for.
        assert_eq!(local.take_lease(&who, "k".into(), &grant(3, 8), 400), None);
        admitted(local.lookup(&who, 850));
        assert_eq!(asked(local.lookup(&who, 900)), (2, Some(unused(8, 2))));
    }

    #[test]
    fn leases_of_one_second_merge_and_an_older_one_goes_back() {
        let local = Local::new(Instant::now());
        let who = Subject::User(Uuid::nil());
        assert_eq!(local.take_lease(&who, "k".into(), &grant(3, 7), 400), None);
        assert_eq!(local.take_lease(&who, "k".into(), &grant(2, 7), 400), None);
        for _ in 0..5 {
            admitted(local.lookup(&who, 500));
        }
        assert_eq!(asked(local.lookup(&who, 500)).0, 10);
        assert_eq!(local.take_lease(&who, "k".into(), &grant(3, 7), 400), None);
        admitted(local.lookup(&who, 500));
        assert_eq!(
            local.take_lease(&who, "k".into(), &grant(4, 8), 1_400),
            Some(unused(7, 2)),
            "the lease of the second before goes back"
        );
        // The sweeper gives back the ended ones and forgets them.
        assert!(local.sweep(1_800).is_empty());
        assert_eq!(local.sweep(1_900), vec![unused(8, 4)]);
        assert_eq!(asked(local.lookup(&who, 1_900)), (0, None));
    }

    #[test]
    fn a_refusal_is_answered_here_but_does_not_replace_a_lease() {
        let local = Local::new(Instant::now());
        let (a, b) = (Subject::User(Uuid::nil()), Subject::User(Uuid::max()));
        let refused = Usage {
            admitted: false,
            used: 5,
            release_at_ms: Some(2_000),
            now_ms: 1_000,
        };
        local.note_refusal(&a, &refused, 100);
        let Lookup::Answer(usage) = local.lookup(&a, 600) else {
            panic!("refused here");
        };
        assert_eq!(
            (usage.admitted, usage.used, usage.release_at_ms),
            (false, 5, Some(1_100))
        );
        assert_eq!(asked(local.lookup(&a, 1_100)), (0, None), "released");
        local.take_lease(&b, "k".into(), &grant(3, 7), 400);
        local.note_refusal(&b, &refused, 450);
        admitted(local.lookup(&b, 500));
    }

    #[tokio::test]
    async fn a_dead_redis_falls_back_to_this_replicas_counter_without_waiting_each_time() {
        // Nothing listens on port 1 of the loopback address.
        let quota = Quota::new(&QuotaConfig {
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..config(2, 0)
        })
        .unwrap()
        .unwrap();
        assert_eq!(quota.backend_name(), "redis");
        let anon = Subject::address("192.0.2.9".parse().unwrap());
        let verdicts: Vec<bool> = [
            quota.check(&anon).await,
            quota.check(&anon).await,
            quota.check(&anon).await,
        ]
        .iter()
        .map(|d| d.is_some_and(|d| d.admitted))
        .collect();
        assert_eq!(verdicts, [true, true, false]);
        // Only the first check asked Redis; the next probe is a second later.
        let Backend::Redis {
            healthy,
            probe_at_ms,
            ..
        } = &quota.backend
        else {
            panic!("a Redis backend");
        };
        assert!(!healthy.load(Ordering::Acquire));
        assert!(probe_at_ms.load(Ordering::Acquire) > quota.elapsed_ms());
    }
}
