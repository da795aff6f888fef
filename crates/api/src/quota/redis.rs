//! Quota logs in Redis, shared by every API replica: one list per caller, its buckets oldest
//! first (see [`crate::quota::window`]), updated by one Lua script, so replicas can never both
//! take the last slot.
//!
//! Requests are *batched* per replica (group commit): while [`IN_FLIGHT`] script calls are in
//! flight, the checks that arrive wait, and the next call carries all of them at once, several
//! requests of one caller as one entry with a count. So a check makes at most one round trip of
//! its own (after waiting at most for a call in flight), and under load a call serves many:
//! the per-call cost (a command parsed, a script started, a reply written, system calls on both
//! sides), which made one `EVALSHA` per request cost more CPU than the rest of a cached request,
//! is shared. Within the script each caller's requests are taken in their order of arrival at
//! one instant, so the answers are exactly those of the same requests checked one by one.
//!
//! A list entry is `bucket:count:running total` (the running total counts every request the
//! key has admitted, through that bucket); the newest entry also carries
//! `:oldest bucket:running total before it:key expiry`. So the requests counted are the
//! newest entry's running total less the one before the oldest bucket, and a check reads one
//! entry and rewrites or appends one, whatever the limit; only when the oldest bucket has left
//! the window does it read the new oldest one. The key's expiry is moved (at most once per
//! 24th of the window) to a 24th of a window past its newest bucket's expiry. A key holds at
//! most one entry per second of the day. Before this the log was a sorted set with a member
//! per request, whose size, memory and update cost grew with the limit.
//!
//! A busy caller with plenty of quota left gets a *reservation* ([`Grant`]): requests counted
//! in Redis ahead of time, in the current second, that its replica admits by itself until that
//! second ends, giving back the unused ones then. With one busy caller a replica makes about a
//! call a second for it instead of one per batch. No rolling day holds more admissions than the
//! limit (each is counted in the second it is admitted in); other replicas may see the caller's
//! count higher by what is reserved and not yet used, for about a second, which is why there is
//! none near the limit ([`RESERVE_FLOOR`], [`RESERVE_SHARE`]) and why a refusal made while
//! reservations may be out names a release a few seconds away instead of the day's: the key
//! `<caller's key>:reserved` holds the bucket of the caller's last reservation until three
//! buckets after it (the log's format is unchanged, so replicas of the previous version read
//! the logs this one writes).
//!
//! The script reads the time from Redis (`TIME`), not from the replica, so replicas whose clocks
//! disagree still share one window. A key expires when its newest bucket leaves the window. A
//! key of another type (a sorted set left by an earlier version) is replaced by a fresh log.

use super::window::{bucket_ms, Usage};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// KEYS: the callers' lists. ARGV: for each key `limit, window (ms), bucket (ms), requests,
/// reservation wanted (-1: none)`. Returns `{now (ms)}` followed, for each key, by `{used before,
/// admitted, the oldest bucket's expiry (ms, -1 when the log is empty), release of the refused
/// (ms, -1 when none were refused or the log is empty), reserved, the bucket they are counted
/// in}`; this is [`crate::quota::window::BucketLog::attempt`]'s rule for `requests` requests at
/// one instant, and then a reservation (see [`Grant`]) when the caller has room to spare.
///
/// A key whose `requests` is negative gives back `-requests` reserved requests of the bucket
/// named in place of the reservation (the ones its replica did not use); its row is zeros.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
local FLOOR = RESERVE_FLOOR
local SHARE = RESERVE_SHARE
local BUSY = RESERVE_BUSY
local MAX = MAX_RESERVE
local function newest(tb, tc, ts, hb, base, exp)
  return string.format('%d:%d:%d:%d:%d:%d', tb, tc, ts, hb, base, exp)
end
-- Any entry's bucket, count and running total.
local function parse(entry)
  local b, c, s = string.match(entry, '^(%-?%d+):(%d+):(%d+)')
  return tonumber(b), tonumber(c), tonumber(s)
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[5 * i - 4])
  local window = tonumber(ARGV[5 * i - 3])
  local step = tonumber(ARGV[5 * i - 2])
  local n = tonumber(ARGV[5 * i - 1])
  local want = tonumber(ARGV[5 * i])
  local slack = math.max(step, math.floor(window / 24))
  local bucket = math.floor(now / step)
  -- newest entry: tb tc ts (bucket, count, running total), hb (oldest bucket), base (running
  -- total before it), exp (the key's expiry)
  local tb, tc, ts, hb, base, exp
  local tail = redis.pcall('LINDEX', key, -1)
  if type(tail) == 'table' then
    -- Not a list (a sorted set left by an earlier version): start over.
    redis.call('DEL', key)
    tail = false
  end
  if tail then
    tb, tc, ts, hb, base, exp = string.match(tail, '^(%-?%d+):(%d+):(%d+):(%-?%d+):(%d+):(%d+)$')
  end
  if not hb then
    -- A list of another format: start over.
    if tail then redis.call('DEL', key) end
    tail = false
  else
    tb, tc, ts = tonumber(tb), tonumber(tc), tonumber(ts)
    hb, base, exp = tonumber(hb), tonumber(base), tonumber(exp)
  end
  if n < 0 then
    -- A give-back: the bucket's count and the running totals from it on drop by what is given
    -- back (never below what the bucket holds). Only the last few buckets are looked at: a
    -- give-back comes a second or two after its bucket.
    local g, b = -n, want
    if tail and b >= hb and b <= tb then
      local found, seen = nil, {}
      for j = 1, 8 do
        local e = tail
        if j > 1 then e = redis.call('LINDEX', key, -j) end
        if not e then break end
        local eb, ec, es = parse(e)
        seen[j] = {eb, ec, es}
        if eb == b then found = j break end
        if eb < b then break end
      end
      if found then
        local d = math.min(g, seen[found][2])
        for j = 1, found do
          local e = seen[j]
          local c = e[2]
          if j == found then c = c - d end
          if j == 1 then
            tc, ts = c, ts - d
            redis.call('LSET', key, -1, newest(tb, tc, ts, hb, base, exp))
          else
            redis.call('LSET', key, -j, string.format('%d:%d:%d', e[1], c, e[3] - d))
          end
        end
      end
    end
    for _ = 1, 6 do out[#out + 1] = 0 end
  else
    local changed = false
    while tail and (hb + 1) * step + window <= now do
      redis.call('LPOP', key)
      changed = true
      local head = redis.call('LINDEX', key, 0)
      if head then
        local b, c, s = parse(head)
        hb, base = b, s - c
      else
        tail = false
      end
    end
    local before = 0
    if tail then before = ts - base end
    local admitted = math.max(0, math.min(n, limit - before))
    -- A reservation only while the caller has plenty left: never more than a SHARE-th of what
    -- remains, and none once fewer than FLOOR remain, so near its limit every request of a
    -- caller is counted here one by one. At least as many as the caller has sent this second
    -- when that is BUSY or more (a caller sending one request at a time gets one too).
    local reserved = 0
    local room = limit - before - admitted
    if want >= 0 and room >= FLOOR then
      if tail and tb == bucket and tc >= BUSY then want = math.max(want, tc) end
      reserved = math.min(want, MAX, math.floor(room / SHARE))
    end
    local add = admitted + reserved
    if add > 0 and tail and tb >= bucket then
      tc, ts = tc + add, ts + add
      redis.call('LSET', key, -1, newest(tb, tc, ts, hb, base, exp))
    elseif add > 0 then
      local fresh = not tail
      if fresh then hb, base, ts = bucket, 0, 0 end
      tb, tc, ts = bucket, add, ts + add
      local due = (bucket + 1) * step + window
      local extend = fresh or due > exp
      if extend then exp = due + slack end
      redis.call('RPUSH', key, newest(tb, tc, ts, hb, base, exp))
      if extend then redis.call('PEXPIREAT', key, exp) end
      tail = true
    elseif changed and tail then
      redis.call('LSET', key, -1, newest(tb, tc, ts, hb, base, exp))
    end
    if reserved > 0 then
      -- Whose reservations may still come back: a key beside the log, gone when they are.
      redis.call('SET', key .. ':reserved', tb, 'PXAT', (bucket + 3) * step)
    end
    local oldest = -1
    if tail then oldest = (hb + 1) * step + window end
    local release = -1
    if admitted < n and tail then
      -- The bucket whose expiry brings the count below the limit: the oldest, unless the limit
      -- was lowered; then the list is read a slice at a time from its oldest entry.
      local excess = before + admitted - limit
      if excess <= 0 then release = oldest end
      local from = 0
      while release < 0 do
        local slice = redis.call('LRANGE', key, from, from + 63)
        if #slice == 0 then break end
        for _, entry in ipairs(slice) do
          local b, _, s = parse(entry)
          if s - base > excess then
            release = (b + 1) * step + window
            break
          end
        end
        from = from + 64
      end
      -- Reservations made in the last seconds may still come back unused: the refused try again
      -- once they have.
      local rb = redis.call('GET', key .. ':reserved')
      if rb then
        local back = (tonumber(rb) + 3) * step
        if release < 0 or back < release then release = back end
      end
    end
    out[#out + 1] = before
    out[#out + 1] = admitted
    out[#out + 1] = oldest
    out[#out + 1] = release
    out[#out + 1] = reserved
    out[#out + 1] = tb or bucket
  end
end
return out
";

/// How long a quota check may wait for Redis before the replica's own counter decides.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// Script calls in flight at once per replica. Each call costs Redis tens of microseconds
/// whatever it carries (its script started, the reply written, system calls), so fewer calls
/// with more checks each cost Redis less: on `bench/quota.sh`'s single hot caller, Redis used
/// 2.6 s of CPU with four in flight, 2.1 s with two and 1.6 s with one, at about the same
/// requests/s. One in flight would make every check wait behind whichever call is slow; two
/// keep a check's wait to about one round trip while the other call is out.
pub const IN_FLIGHT: usize = 2;

/// No reservation while fewer requests than this remain to a caller: near its limit every
/// request is counted in Redis by itself, so the last requests of a quota are shared exactly
/// among replicas (and the default 100 a day per address never reserves anything).
pub const RESERVE_FLOOR: u64 = 1000;
/// A reservation takes at most this share (1/16) of what remains to the caller.
pub const RESERVE_SHARE: u64 = 16;
/// The largest reservation.
pub const MAX_RESERVE: u64 = 1 << 16;
/// A caller that has sent this many requests in the current second (over all replicas) gets a
/// reservation of as many, even when its requests come one at a time.
pub const RESERVE_BUSY: u64 = 4;

/// Requests counted in Redis ahead of time for one caller, for this replica to admit by itself
/// until the end of the second they are counted in ([`Grant::valid_until_ms`]); what it has not
/// used by then it gives back ([`RedisCounter::give_back`]). So a busy caller with plenty of
/// quota left costs Redis about one call a second per replica instead of one per batch, and no
/// rolling day ever holds more admissions than the limit: every request admitted from a grant
/// is counted in the second it is admitted in, like one checked by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub reserved: u64,
    /// The bucket they are counted in (what a give-back names).
    pub bucket: i64,
    /// Requests counted for the caller before the first reserved one, this replica's own
    /// reservation aside (its first reserved request is `used + 1`).
    pub used: u64,
    /// The oldest bucket's expiry, in Redis's clock.
    pub oldest_ms: i64,
    /// Redis's clock when the script ran.
    pub now_ms: i64,
    /// The end of the second the script ran in (Redis's clock): reserved requests may be
    /// admitted until then.
    pub valid_until_ms: i64,
}

/// Reserved requests a replica did not use, on their way back to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unused {
    /// The caller's key.
    pub key: String,
    /// The bucket they were counted in.
    pub bucket: i64,
    pub requests: u64,
}

/// What a waiting check receives: its usage (and, for one check of an entry, the entry's
/// reservation), or the error that failed its whole batch.
type Answer = Result<(Usage, Option<Grant>), Arc<RedisError>>;

/// Counts requests in Redis; cheap to clone (the clones share one connection and one batch).
#[derive(Clone)]
pub struct RedisCounter {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    config: AsyncConnectionConfig,
    /// One multiplexed connection; dropped after an error and opened again by the next batch
    /// (which `Quota` lets through once a second while Redis fails).
    conn: Mutex<Option<MultiplexedConnection>>,
    script: Script,
    /// Script calls made.
    calls: AtomicU64,
    queue: Mutex<Queue>,
}

/// The checks waiting for the next call.
#[derive(Default)]
struct Queue {
    /// Tasks sending batches (at most [`IN_FLIGHT`]); each takes whatever waits here when its
    /// call returns, and stops when nothing does.
    senders: usize,
    entries: Vec<Entry>,
    /// Where each key's entry is in `entries`.
    index: HashMap<String, usize>,
}

/// The waiting requests of one caller, oldest first; or a give-back (no waiters).
struct Entry {
    key: String,
    limit: u64,
    window_ms: i64,
    /// `None`: no reservation; `Some(n)`: about `n` wanted (see [`RedisCounter::attempt_or_reserve`]).
    reserve: Option<u64>,
    /// `(bucket, requests)` given back.
    give_back: Option<(i64, u64)>,
    waiters: Vec<oneshot::Sender<Answer>>,
}

impl Entry {
    fn give_back(unused: Unused) -> Entry {
        Entry {
            key: unused.key,
            // Neither is read for a give-back.
            limit: 0,
            window_ms: 0,
            reserve: None,
            give_back: Some((unused.bucket, unused.requests)),
            waiters: Vec::new(),
        }
    }

    /// The reservation asked for: the hint, or, when several requests of the caller wait
    /// together (a busy caller), twice as many as wait; `-1` for none (the script's
    /// convention).
    fn reserve_wanted(&self) -> i64 {
        let Some(hint) = self.reserve else {
            return -1;
        };
        let together = self.waiters.len() as u64;
        let busy = if together >= 2 { 2 * together } else { 0 };
        i64::try_from(hint.max(busy).min(MAX_RESERVE)).unwrap_or(0)
    }
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
            shared: Arc::new(Shared {
                client,
                config,
                conn: Mutex::new(None),
                script: Script::new(
                    &SCRIPT
                        .replace("RESERVE_FLOOR", &RESERVE_FLOOR.to_string())
                        .replace("RESERVE_SHARE", &RESERVE_SHARE.to_string())
                        .replace("RESERVE_BUSY", &RESERVE_BUSY.to_string())
                        .replace("MAX_RESERVE", &MAX_RESERVE.to_string()),
                ),
                calls: AtomicU64::new(0),
                queue: Mutex::new(Queue::default()),
            }),
        })
    }

    /// Counts one request of `key`: joins the next batch, and starts a task sending batches when
    /// fewer than [`IN_FLIGHT`] do.
    pub async fn attempt(
        &self,
        key: &str,
        limit: u64,
        window_ms: i64,
    ) -> Result<Usage, Arc<RedisError>> {
        self.enqueue(key, limit, window_ms, None)
            .await
            .map(|(usage, _)| usage)
    }

    /// [`Self::attempt`]; with `Some(hint)`, also asking for a reservation of about `hint`
    /// requests (more when several requests of the caller wait together or it has sent several
    /// this second; Redis grants less or none when the caller has little left). One check of
    /// the entry receives the [`Grant`]; whoever receives it owns the reserved requests and
    /// must give back those it does not use.
    pub async fn attempt_or_reserve(
        &self,
        key: &str,
        limit: u64,
        window_ms: i64,
        hint: Option<u64>,
    ) -> Answer {
        self.enqueue(key, limit, window_ms, hint).await
    }

    /// Gives back reserved requests that were not used, with the next script call (a batch of
    /// its own when none is due).
    pub fn give_back(&self, unused: Unused) {
        if unused.requests == 0 {
            return;
        }
        self.queue_up(|queue| queue.entries.push(Entry::give_back(unused)));
    }

    /// Gives back at once, in one call of its own, reserved requests that were not used: at
    /// shutdown, when no batch is to come.
    pub async fn give_back_now(&self, unused: Vec<Unused>) -> Result<(), RedisError> {
        let entries: Vec<Entry> = unused.into_iter().map(Entry::give_back).collect();
        if entries.is_empty() {
            return Ok(());
        }
        self.shared.call(&entries).await.map(drop)
    }

    /// Adds to the queue, and starts a task sending batches when fewer than [`IN_FLIGHT`] do.
    fn queue_up(&self, add: impl FnOnce(&mut Queue)) {
        let start = {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            add(&mut queue);
            queue.claim_sender()
        };
        if start {
            // A task of its own, not a request's future: a client that hangs up must not take
            // the batch of the others with it.
            tokio::spawn(Arc::clone(&self.shared).flush());
        }
    }

    async fn enqueue(&self, key: &str, limit: u64, window_ms: i64, reserve: Option<u64>) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.queue_up(|queue| {
            match queue.index.get(key).map(|&i| &mut queue.entries[i]) {
                Some(entry) if entry.limit == limit && entry.window_ms == window_ms => {
                    entry.waiters.push(tx);
                    if let Some(hint) = reserve {
                        entry.reserve = Some(entry.reserve.unwrap_or(0).max(hint));
                    }
                }
                // Checks of one key with another limit or window (never from `Quota`, whose
                // limits are fixed) go as an entry of their own, checked after the first.
                found => {
                    if found.is_none() {
                        queue.index.insert(key.to_owned(), queue.entries.len());
                    }
                    queue.entries.push(Entry {
                        key: key.to_owned(),
                        limit,
                        window_ms,
                        reserve,
                        give_back: None,
                        waiters: vec![tx],
                    });
                }
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(RedisError::from(std::io::Error::other(
                "the quota batch was abandoned",
            ))))
        })
    }

    /// Runs `pipe` on this counter's connection (shared with other users of the same Redis, such
    /// as the login throttle), with the same timeouts and reconnection.
    pub async fn query<T: ::redis::FromRedisValue>(
        &self,
        pipe: &::redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut conn = self.shared.connection().await?;
        let answer = pipe.query_async(&mut conn).await;
        if let Err(e) = &answer {
            self.shared.drop_connection_after(e);
        }
        answer
    }

    /// Script calls made so far (each carries a batch of checks).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Sends batches until none is waiting.
    async fn flush(self: Arc<Self>) {
        // Should this task panic, the checks that come next start another instead of waiting.
        let mut guard = FlushGuard {
            shared: &self,
            armed: true,
        };
        loop {
            let mut entries = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.entries.is_empty() {
                    queue.senders -= 1;
                    guard.armed = false;
                    return;
                }
                queue.index.clear();
                std::mem::take(&mut queue.entries)
            };
            // Checks that stopped waiting (timed out: their replica's counter decided) are not
            // counted again here.
            for entry in &mut entries {
                entry.waiters.retain(|tx| !tx.is_closed());
            }
            entries.retain(|entry| entry.give_back.is_some() || !entry.waiters.is_empty());
            if entries.is_empty() {
                continue;
            }
            match self.call(&entries).await {
                Ok(answer) => {
                    for unused in deliver(entries, &answer) {
                        // Nobody waits any more for the check that was to own them.
                        self.queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entries
                            .push(Entry::give_back(unused));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for tx in entries.into_iter().flat_map(|entry| entry.waiters) {
                        let _ = tx.send(Err(Arc::clone(&e)));
                    }
                }
            }
        }
    }

    /// The shared connection, opened when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let current = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(conn) => Ok(conn),
            None => {
                let conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?;
                *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                Ok(conn)
            }
        }
    }

    /// Forgets the connection after an error that may have broken it.
    fn drop_connection_after(&self, e: &RedisError) {
        if e.is_unrecoverable_error() || e.is_timeout() {
            *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// One script call for `entries`: the raw answer (see [`SCRIPT`]).
    async fn call(&self, entries: &[Entry]) -> Result<Vec<i64>, RedisError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for entry in entries {
            invocation
                .key(&entry.key)
                .arg(entry.limit)
                .arg(entry.window_ms)
                .arg(bucket_ms(entry.window_ms));
            match entry.give_back {
                Some((bucket, requests)) => {
                    invocation
                        .arg(-i64::try_from(requests).unwrap_or(i64::MAX))
                        .arg(bucket);
                }
                None => {
                    invocation
                        .arg(entry.waiters.len())
                        .arg(entry.reserve_wanted());
                }
            }
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer: Result<Vec<i64>, RedisError> = invocation.invoke_async(&mut conn).await;
        if let Err(e) = &answer {
            self.drop_connection_after(e);
        }
        answer
    }
}

impl Queue {
    /// True when the caller is to start a sending task (fewer than [`IN_FLIGHT`] run).
    fn claim_sender(&mut self) -> bool {
        let start = self.senders < IN_FLIGHT;
        if start {
            self.senders += 1;
        }
        start
    }
}

/// Hands each waiting check its usage from the script's answer, and a reservation to the first
/// check still waiting. Returns the reservations nobody was left to take, to be given back.
fn deliver(entries: Vec<Entry>, answer: &[i64]) -> Vec<Unused> {
    let malformed = || {
        Arc::new(RedisError::from(std::io::Error::other(
            "the quota script answered in an unexpected shape",
        )))
    };
    let mut orphans = Vec::new();
    let (Some(&now_ms), Some(rest)) = (answer.first(), answer.get(1..)) else {
        let e = malformed();
        for tx in entries.into_iter().flat_map(|entry| entry.waiters) {
            let _ = tx.send(Err(Arc::clone(&e)));
        }
        return orphans;
    };
    let mut rows = rest.chunks_exact(6);
    for entry in entries {
        let Some(&[before, admitted, oldest, release, reserved, bucket]) = rows.next() else {
            let e = malformed();
            for tx in entry.waiters {
                let _ = tx.send(Err(Arc::clone(&e)));
            }
            continue;
        };
        if entry.give_back.is_some() {
            continue;
        }
        let n = entry.waiters.len();
        let mut grant = (reserved > 0).then(|| {
            let step = bucket_ms(entry.window_ms);
            Grant {
                reserved: u64::try_from(reserved).unwrap_or(0),
                bucket,
                used: u64::try_from(before.saturating_add(admitted)).unwrap_or(0),
                oldest_ms: oldest,
                now_ms,
                valid_until_ms: (now_ms.div_euclid(step) + 1).saturating_mul(step),
            }
        });
        let usages = batch_usages(n, [before, admitted, oldest, release], now_ms);
        for (tx, usage) in entry.waiters.into_iter().zip(usages) {
            if let Err(Ok((_, back))) = tx.send(Ok((usage, grant.take()))) {
                grant = back;
            }
        }
        if let Some(grant) = grant {
            orphans.push(Unused {
                key: entry.key,
                bucket: grant.bucket,
                requests: grant.reserved,
            });
        }
    }
    orphans
}

/// The usages of `n` requests of one caller checked together, in order, from the script's row
/// `[used before, admitted, oldest bucket's expiry, release of the refused]`: the first
/// `admitted` are admitted, each seeing the log as it was right after its own admission (its
/// `used` one more than the previous one's, the oldest bucket's expiry as its release); the
/// others see the full log and the expiry that lets one more in. Exactly
/// [`crate::quota::window::BucketLog::attempt`] applied to each request in turn at one instant.
pub fn batch_usages(n: usize, row: [i64; 4], now_ms: i64) -> impl Iterator<Item = Usage> {
    let [before, admitted, oldest, release] = row;
    let before = u64::try_from(before).unwrap_or(0);
    let admitted = u64::try_from(admitted).unwrap_or(0);
    let at = |ms: i64| (ms >= 0).then_some(ms);
    (0..n as u64).map(move |i| {
        if i < admitted {
            Usage {
                admitted: true,
                used: before + i + 1,
                release_at_ms: at(oldest),
                now_ms,
            }
        } else {
            Usage {
                admitted: false,
                used: before + admitted,
                release_at_ms: at(release),
                now_ms,
            }
        }
    })
}

/// Counts a sending task out if it ends without doing so itself (a panic).
struct FlushGuard<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .senders -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::window::{bucket_of, expiry, BucketLog};

    /// The batch's answers equal those of the same requests checked one by one, whatever the
    /// log held before and however many came together.
    #[test]
    fn a_batch_answers_as_its_requests_one_by_one() {
        let window = 86_400_000;
        let step = bucket_ms(window);
        for limit in [1u64, 3, 5] {
            for earlier in 0..=6i64 {
                for n in 1..=7usize {
                    // The log before the batch: one attempt a second from 0 s.
                    let mut log = BucketLog::default();
                    for t in 0..earlier {
                        log.attempt(t * 1000, window, limit);
                    }
                    let now = 10_500;
                    let mut expected = Vec::new();
                    for _ in 0..n {
                        expected.push(log.attempt(now, window, limit));
                    }
                    // What the script answers for this log: its row. The limit never changed,
                    // so the oldest bucket is also the one whose expiry lets one more in.
                    let before = (earlier as u64).min(limit);
                    let admitted = n.min(limit.saturating_sub(before) as usize) as u64;
                    let oldest = if before > 0 {
                        expiry(0, step, window)
                    } else if admitted > 0 {
                        expiry(bucket_of(now, step), step, window)
                    } else {
                        -1
                    };
                    let release = if (admitted as usize) < n { oldest } else { -1 };
                    let row = [before as i64, admitted as i64, oldest, release];
                    let got: Vec<Usage> = batch_usages(n, row, now).collect();
                    assert_eq!(
                        got, expected,
                        "limit {limit}, {earlier} before, {n} together"
                    );
                }
            }
        }
    }
}
