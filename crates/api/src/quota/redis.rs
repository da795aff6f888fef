//! Quota logs in Redis, shared by every API replica: one sorted set per caller (members unique
//! per request, scores the admission instants in ms), updated by one Lua script, so each request
//! costs one round trip (`EVALSHA`) and replicas can never both take the last slot.
//!
//! The script reads the time from Redis (`TIME`), not from the replica, so replicas whose clocks
//! disagree still share one window. Keys expire a window after their last admission, and a
//! key never holds more than `limit` members (rejected requests are not recorded).

use super::window::Usage;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// KEYS[1]: the caller's set. ARGV: limit, window (ms), a member unique to this request.
/// Returns `{admitted (0|1), used, release_at (ms, -1 when empty), now (ms)}`; see
/// [`crate::quota::window`] for the rule, which this mirrors.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local admitted = 0
if used < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  used = used + 1
  admitted = 1
end
local index = used - limit
if index < 0 then index = 0 end
local entry = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
local release = -1
if entry[2] then release = tonumber(entry[2]) end
return {admitted, used, release, now}
";

/// How long a quota check may wait for Redis before the replica's own counter decides.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisCounter {
    client: Client,
    config: AsyncConnectionConfig,
    /// One multiplexed connection (concurrent checks are pipelined on it); dropped after an
    /// error and opened again by the next check (which `Quota` lets through once a second while
    /// Redis fails).
    conn: Mutex<Option<MultiplexedConnection>>,
    script: Script,
    /// Members are `<nonce>-<sequence>`: unique within this process by the sequence, across
    /// processes by the random nonce.
    nonce: u64,
    sequence: AtomicU64,
}

impl std::fmt::Debug for RedisCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounter").finish_non_exhaustive()
    }
}

impl RedisCounter {
    /// Prepares the connection to `url` (`redis://[user:pw@]host[:port][/db]`) without opening
    /// it (the first check does): a Redis that is down at start-up must not keep the API from
    /// starting. Fails only on a malformed URL.
    pub fn connect(url: &str) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        Ok(Self {
            client,
            config,
            conn: Mutex::new(None),
            script: Script::new(SCRIPT),
            nonce: rand::random(),
            sequence: AtomicU64::new(0),
        })
    }

    /// Counts one request of `key`.
    pub async fn attempt(
        &self,
        key: &str,
        limit: u64,
        window_ms: i64,
    ) -> Result<Usage, RedisError> {
        let member = format!(
            "{:x}-{:x}",
            self.nonce,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let current = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut conn = match current {
            Some(conn) => conn,
            None => {
                let conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?;
                *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                conn
            }
        };
        let answer: Result<(i64, i64, i64, i64), RedisError> = self
            .script
            .key(key)
            .arg(limit)
            .arg(window_ms)
            .arg(member)
            .invoke_async(&mut conn)
            .await;
        let (admitted, used, release, now) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                if e.is_unrecoverable_error() || e.is_timeout() {
                    *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                return Err(e);
            }
        };
        Ok(Usage {
            admitted: admitted == 1,
            used: u64::try_from(used).unwrap_or(0),
            release_at_ms: (release >= 0).then_some(release),
            now_ms: now,
        })
    }
}
