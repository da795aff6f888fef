//! Password logins under attack: how many guesses a client may make (the throttle) and what each
//! costs ([`Hashing`]). Every scheme that takes a password (Basic, `POST /login`) goes through
//! [`Logins::begin`] before any hash is computed.
//!
//! Failures are counted in fixed windows that start at a key's first failure, and read before
//! the hash; a success clears its own (account, address) count. Three counts, each a setting:
//!
//! - per (account, address), small: one client guessing one password. A success from another
//!   address does not clear it, and it does not lock the account's owner out elsewhere (what
//!   GitHub does);
//! - per address, larger: one client spraying many accounts (Django-axes' default key);
//! - per account across addresses, off by default: it bounds a guesser with many addresses but
//!   lets anyone lock an account's password logins for a window (API keys and tokens issued
//!   before still work).
//!
//! Past a limit the answer is 429 with `Retry-After`, and nothing is hashed. With Redis the
//! counts are shared by all replicas (on the quota's connection); when Redis fails the replica's
//! own counts decide.

use crate::identity::AddrKey;
use crate::password::{Busy, Hashing};
use crate::quota::redis::RedisCounter;
use crate::ApiError;
use counts::Counts;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod counts;

/// Failed password checks, by scheme (`basic`, `login`).
pub const FAILURES: &str = "bourse_login_failures_total";
/// Password attempts refused with 429 before any hash, by scheme and by the count that was full.
pub const THROTTLED: &str = "bourse_login_throttled_total";

/// Describes the login metrics and registers their series at zero.
pub fn describe() {
    metrics::describe_counter!(
        FAILURES,
        metrics::Unit::Count,
        "Password checks that failed (unknown user, wrong password, inactive user), by scheme."
    );
    metrics::describe_counter!(
        THROTTLED,
        metrics::Unit::Count,
        "Password attempts refused with 429 before hashing, by scheme and the full count (account_address, address, account)."
    );
    metrics::describe_counter!(
        crate::password::HASHES,
        metrics::Unit::Count,
        "Password hashes verified (against a stored hash, or the dummy for unknown users)."
    );
    metrics::describe_counter!(
        crate::password::BUSY,
        metrics::Unit::Count,
        "Password checks refused with 503 because every hashing slot stayed busy."
    );
    for scheme in [Scheme::Basic, Scheme::Login] {
        metrics::counter!(FAILURES, "scheme" => scheme.name()).increment(0);
        for kind in Kind::ALL {
            metrics::counter!(THROTTLED, "scheme" => scheme.name(), "limit" => kind.name())
                .increment(0);
        }
    }
    metrics::counter!(crate::password::BUSY).increment(0);
    metrics::counter!(crate::password::HASHES).increment(0);
}

/// Which scheme took the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Login,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Basic => "basic",
            Scheme::Login => "login",
        }
    }
}

/// Attempt limits per window; 0 turns a count off.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    pub per_account_address: u64,
    pub per_address: u64,
    pub per_account: u64,
    pub window: Duration,
    /// Prefix of the Redis keys.
    pub redis_prefix: String,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_account_address: 10,
            per_address: 100,
            per_account: 0,
            window: Duration::from_secs(15 * 60),
            redis_prefix: "bourse:login:".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AccountAddress,
    Address,
    Account,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::AccountAddress, Kind::Address, Kind::Account];

    fn name(self) -> &'static str {
        match self {
            Kind::AccountAddress => "account_address",
            Kind::Address => "address",
            Kind::Account => "account",
        }
    }
}

/// The password checks of the API: the throttle and the bounded hashing.
pub struct Logins {
    pub hashing: Hashing,
    config: ThrottleConfig,
    counts: Counts,
    /// Checks under way, by credential hash: a client's burst of requests with one Basic
    /// credential costs one hash (the others wait for it and find it cached), not one each.
    in_flight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Logins {
    fn default() -> Self {
        Logins::new(Hashing::default(), ThrottleConfig::default(), None)
    }
}

/// One password attempt, counted; tell it how it ended.
#[must_use]
pub struct Attempt<'a> {
    logins: &'a Logins,
    scheme: Scheme,
    username: String,
    addr: AddrKey,
    keys: Vec<(Kind, String)>,
}

impl Logins {
    pub fn new(hashing: Hashing, config: ThrottleConfig, redis: Option<RedisCounter>) -> Logins {
        Logins {
            hashing,
            counts: Counts::new(config.window, redis),
            config,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `check` for the credential hashed as `key` once at a time: concurrent checks of the
    /// same credential wait for the one before them (which, when right, left it cached).
    pub async fn one_at_a_time<T>(&self, key: [u8; 32], check: impl Future<Output = T>) -> T {
        let turn = {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(key).or_default())
        };
        let answer = {
            let _turn = turn.lock().await;
            check.await
        };
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Ours and the map's: nobody else waits.
        if Arc::strong_count(&turn) == 2 {
            map.remove(&key);
        }
        answer
    }

    /// Where the counts live: `redis` or `memory`.
    pub fn backend_name(&self) -> &'static str {
        self.counts.backend_name()
    }

    /// Starts an attempt for `username` from `addr`: 429 when a count has reached its limit
    /// (the password is then not checked). Only failures are counted, when they happen: guesses
    /// already in flight when a limit is reached still finish (at most the hashing slots' worth
    /// per wait), and concurrent right answers are never refused.
    pub async fn begin(
        &self,
        scheme: Scheme,
        addr: Option<IpAddr>,
        username: &str,
    ) -> Result<Attempt<'_>, ApiError> {
        let addr = AddrKey::of(addr);
        let account = account_key(username);
        let prefix = &self.config.redis_prefix;
        let keys: Vec<(Kind, String)> = Kind::ALL
            .into_iter()
            .filter(|kind| self.limit(*kind) > 0)
            .map(|kind| {
                let key = match kind {
                    Kind::AccountAddress => format!("{prefix}aa:{account}:{addr}"),
                    Kind::Address => format!("{prefix}addr:{addr}"),
                    Kind::Account => format!("{prefix}acct:{account}"),
                };
                (kind, key)
            })
            .collect();
        let attempt = Attempt {
            logins: self,
            scheme,
            username: username.to_owned(),
            addr,
            keys,
        };
        let counts = self.counts.get(&keys_of(&attempt.keys, |_| true)).await;
        let full = attempt
            .keys
            .iter()
            .zip(&counts)
            .filter(|((kind, _), (count, _))| *count >= self.limit(*kind))
            .max_by_key(|(_, (_, ttl))| *ttl);
        if let Some(((kind, _), (_, ttl))) = full {
            metrics::counter!(THROTTLED, "scheme" => scheme.name(), "limit" => kind.name())
                .increment(1);
            return Err(ApiError::Throttled {
                retry_after: ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0),
            });
        }
        Ok(attempt)
    }

    fn limit(&self, kind: Kind) -> u64 {
        match kind {
            Kind::AccountAddress => self.config.per_account_address,
            Kind::Address => self.config.per_address,
            Kind::Account => self.config.per_account,
        }
    }
}

impl Attempt<'_> {
    /// Checks `password` against `stored` (`None`: no such user or no password; the dummy hash
    /// is checked instead), then settles the attempt: a success clears its (account, address)
    /// count, a failure is counted and logged. 503 when no hashing slot freed up in time (not
    /// counted).
    pub async fn check(self, password: &str, stored: Option<&str>) -> Result<bool, ApiError> {
        match self.logins.hashing.verify(password, stored).await {
            Ok(true) => {
                self.succeeded().await;
                Ok(true)
            }
            Ok(false) => {
                self.failed().await;
                Ok(false)
            }
            Err(Busy) => Err(ApiError::hashing_busy(1)),
        }
    }

    async fn failed(self) {
        metrics::counter!(FAILURES, "scheme" => self.scheme.name()).increment(1);
        let username = printable(&self.username);
        let scheme = self.scheme.name();
        tracing::warn!(scheme, username = %username, client = %self.addr, "failed login");
        let counts = self
            .logins
            .counts
            .add(&keys_of(&self.keys, |_| true), 1)
            .await;
        for ((kind, _), (count, ttl)) in self.keys.iter().zip(counts) {
            // Once per window and key, not once per refused guess: a flood must not flood the log.
            if count == self.logins.limit(*kind) {
                tracing::warn!(
                    scheme,
                    username = %username,
                    client = %self.addr,
                    limit = kind.name(),
                    retry_after = ttl.as_secs(),
                    "login throttled: too many failed attempts"
                );
            }
        }
    }

    /// Clears the (account, address) count; the others (address, account) are not this
    /// client's to clear.
    async fn succeeded(self) {
        for key in keys_of(&self.keys, |kind| kind == Kind::AccountAddress) {
            self.logins.counts.clear(key).await;
        }
    }
}

/// The keys of the kinds `which` picks.
fn keys_of(keys: &[(Kind, String)], which: fn(Kind) -> bool) -> Vec<&str> {
    keys.iter()
        .filter(|(kind, _)| which(*kind))
        .map(|(_, key)| key.as_str())
        .collect()
}

/// A username as a short key: a hash, so that a key never carries what a client typed.
fn account_key(username: &str) -> String {
    let digest = Sha256::digest(username.to_lowercase().as_bytes());
    hex::encode(&digest[..12])
}

/// A username for the log: at most 64 characters, control characters escaped.
fn printable(username: &str) -> String {
    username
        .chars()
        .take(64)
        .flat_map(char::escape_debug)
        .collect()
}

#[cfg(test)]
mod tests;
