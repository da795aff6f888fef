//! Per-day quotas: anonymous callers per client address, authenticated callers per
//! user, over a rolling day, spent by the [`crate::gate`] in front of the routes.
//!
//! - [`window`]: the rolling-day rule, counted per second, and the header arithmetic (pure).
//! - [`memory`]: logs in this process (one replica), [`redis`]: logs in Redis (any number of
//!   replicas; atomic; at most one round trip per request, the checks that arrive while a call
//!   is in flight go together in the next), [`fallback`]: Redis with this replica's own counter
//!   deciding while Redis does not answer.
//!
//! Every tracked request counts, whatever its answer (a 401 counts against the address);
//! health, readiness, metrics, docs and the live stream are not tracked
//! ([`crate::identity::is_untracked`]). Counted responses carry `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`; a refused request gets 429
//! with `Retry-After` and the body of docs/api.md.
//!
//! A caller Redis has refused is refused by the replica itself until its release, so a flood
//! past a quota costs Redis nothing.

pub mod circuit;
pub mod fallback;
pub mod memory;
pub mod redis;
pub mod window;

use crate::identity::{AddrKey, Caller};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use fallback::RedisWithFallback;
use memory::MemoryCounter;
use redis::RedisCounter;
use std::net::IpAddr;
use std::time::Duration;
use uuid::Uuid;
use window::Decision;

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
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            anonymous: 100,
            user: 1000,
            window: DAY,
            redis_url: None,
            redis_prefix: "bourse:quota:".into(),
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
    Redis(Box<RedisWithFallback>),
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The headers that only depend on the kind of caller, made once.
#[derive(Debug)]
struct KindHeaders {
    limit: HeaderValue,
    /// `100;w=86400`
    policy: HeaderValue,
}

impl KindHeaders {
    fn new(limit: u64, window_ms: i64) -> KindHeaders {
        let window_secs = window::ceil_secs(window_ms);
        KindHeaders {
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
    /// The anonymous callers', then the users'.
    headers: [KindHeaders; 2],
    window_ms: i64,
    prefix: String,
    backend: Backend,
}

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
        let backend = match &config.redis_url {
            Some(url) => Backend::Redis(Box::new(RedisWithFallback::new(RedisCounter::connect(
                url,
            )?))),
            None => Backend::Memory(MemoryCounter::new()),
        };
        let window_ms = i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
        Ok(Some(Quota {
            anonymous: config.anonymous,
            user: config.user,
            headers: [
                KindHeaders::new(config.anonymous, window_ms),
                KindHeaders::new(config.user, window_ms),
            ],
            window_ms,
            prefix: config.redis_prefix.clone(),
            backend,
        }))
    }

    /// The Redis counter, whose connection other users of the same Redis share.
    pub fn redis(&self) -> Option<&RedisCounter> {
        match &self.backend {
            Backend::Redis(backend) => Some(&backend.redis),
            Backend::Memory(_) => None,
        }
    }

    /// `memory` or `redis`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
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
        let kind = match subject {
            Subject::Anonymous(_) => &self.headers[0],
            Subject::User(_) => &self.headers[1],
        };
        headers.insert(LIMIT.clone(), kind.limit.clone());
        headers.insert(REMAINING.clone(), HeaderValue::from(decision.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(decision.reset_secs));
        headers.insert(POLICY.clone(), kind.policy.clone());
    }

    /// Counts one request of `subject`; `None` when its kind of caller is unlimited.
    pub async fn check(&self, subject: &Subject) -> Option<Decision> {
        let limit = self.limit(subject);
        if limit == 0 {
            return None;
        }
        let usage = match &self.backend {
            Backend::Memory(counter) => counter.attempt(subject, limit, self.window_ms),
            Backend::Redis(backend) => {
                let key = || self.key(subject);
                backend.check(subject, key, limit, self.window_ms).await
            }
        };
        let decision = Decision::new(limit, self.window_ms, usage);
        if !decision.admitted {
            metrics::counter!(REJECTIONS, "caller" => subject.label()).increment(1);
        }
        Some(decision)
    }

    /// Script calls made to Redis so far (`None` with counters in memory).
    pub fn redis_calls(&self) -> Option<u64> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(backend) => Some(backend.redis.calls()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Credential;
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
        let shared = QuotaConfig {
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..config(1, 1)
        };
        let shared = Quota::new(&shared).unwrap().unwrap();
        assert_eq!(
            shared.backend_name(),
            "redis",
            "connected at the first check"
        );
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
}
