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
//! The script reads the time from Redis (`TIME`), not from the replica, so replicas whose clocks
//! disagree still share one window. A key expires when its newest bucket leaves the window. A
//! key of another type (a sorted set left by an earlier version) is replaced by a fresh log.

use super::circuit::Circuit;
use super::window::{bucket_ms, Usage};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// The check (see `check.lua` for its arguments and answer): [`crate::quota::window::BucketLog::attempt`]'s
/// rule for each key's requests at one instant.
const SCRIPT: &str = include_str!("check.lua");

/// How long a call may wait for Redis before the replica's own counter decides.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// Script calls in flight at once per replica. Each call costs Redis tens of microseconds
/// whatever it carries (its script started, the reply written, system calls), so fewer calls
/// with more checks each cost Redis less: on `bench/quota.sh`'s single hot caller, Redis used
/// 2.6 s of CPU with four in flight, 2.1 s with two and 1.6 s with one, at about the same
/// requests/s. One in flight would make every check wait behind whichever call is slow; two
/// keep a check's wait to about one round trip while the other call is out.
pub const IN_FLIGHT: usize = 2;

/// What a waiting check receives: its usage, or the error that failed its whole batch.
type Answer = Result<Usage, Arc<RedisError>>;

/// Counts requests in Redis; cheap to clone (the clones share one connection and one batch).
#[derive(Clone)]
pub struct RedisCounter {
    batcher: Arc<ScriptBatcher>,
}

/// The connection, the script and the checks waiting for their call, behind one [`RedisCounter`]
/// and its clones.
struct ScriptBatcher {
    client: Client,
    config: AsyncConnectionConfig,
    /// One multiplexed connection; dropped after an error and opened again by the next batch
    /// (which `Quota` lets through once a second while Redis fails).
    conn: Mutex<Option<MultiplexedConnection>>,
    script: Script,
    /// Whether Redis is asked, for the script calls and [`RedisCounter::query`] alike.
    circuit: Circuit,
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

/// The waiting requests of one caller, oldest first.
struct Entry {
    key: String,
    limit: u64,
    window_ms: i64,
    waiters: Vec<oneshot::Sender<Answer>>,
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
            batcher: Arc::new(ScriptBatcher {
                client,
                config,
                conn: Mutex::new(None),
                script: Script::new(SCRIPT),
                circuit: Circuit::default(),
                calls: AtomicU64::new(0),
                queue: Mutex::new(Queue::default()),
            }),
        })
    }

    /// Counts one request of `key`: joins the next batch, and starts a task sending batches when
    /// fewer than [`IN_FLIGHT`] do. Fails at once while the [`Circuit`] is open, and after
    /// [`RESPONSE_TIMEOUT`] without an answer.
    pub async fn attempt(&self, key: &str, limit: u64, window_ms: i64) -> Answer {
        if !self.batcher.circuit.admit() {
            return Err(Arc::new(failing()));
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut guard = self
                .batcher
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let queue = &mut *guard;
            match queue.index.get(key).map(|&i| &mut queue.entries[i]) {
                Some(entry) if entry.limit == limit && entry.window_ms == window_ms => {
                    entry.waiters.push(tx);
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
                        waiters: vec![tx],
                    });
                }
            }
            queue.claim_sender()
        };
        if start {
            // A task of its own, not a request's future: a client that hangs up must not take
            // the batch of the others with it.
            tokio::spawn(Arc::clone(&self.batcher).flush());
        }
        let answer = match tokio::time::timeout(RESPONSE_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Arc::new(RedisError::from(std::io::Error::other(
                "the quota batch was abandoned",
            )))),
            Err(_) => Err(Arc::new(no_answer())),
        };
        self.batcher
            .record(answer.as_ref().map(|_| ()).map_err(|e| &**e));
        answer
    }

    /// Runs `pipe` on this counter's connection (shared with other users of the same Redis, such
    /// as the login throttle), with the same timeouts, reconnection and [`Circuit`].
    pub async fn query<T: ::redis::FromRedisValue>(
        &self,
        pipe: &::redis::Pipeline,
    ) -> Result<T, RedisError> {
        if !self.batcher.circuit.admit() {
            return Err(failing());
        }
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, async {
            let mut conn = self.batcher.connection().await?;
            let answer = pipe.query_async(&mut conn).await;
            if let Err(e) = &answer {
                self.batcher.drop_connection_after(e);
            }
            answer
        })
        .await
        .unwrap_or_else(|_| Err(no_answer()));
        self.batcher.record(answer.as_ref().map(|_| ()));
        answer
    }

    /// True while Redis is considered down (its calls fail at once).
    pub fn is_failing(&self) -> bool {
        self.batcher.circuit.is_open()
    }

    /// Script calls made so far (each carries a batch of checks).
    pub fn calls(&self) -> u64 {
        self.batcher.calls.load(Ordering::Relaxed)
    }
}

impl ScriptBatcher {
    /// Sends batches until none is waiting.
    async fn flush(self: Arc<Self>) {
        // Should this task panic, the checks that come next start another instead of waiting.
        let mut guard = FlushGuard {
            batcher: &self,
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
            entries.retain(|entry| !entry.waiters.is_empty());
            if entries.is_empty() {
                continue;
            }
            match self.call(&entries).await {
                Ok(answer) => deliver(entries, &answer),
                Err(e) => fail(entries, &Arc::new(e)),
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

    /// Moves the circuit on a call's outcome: any error (an error reply too, which would only
    /// come again) leaves Redis alone until the next probe.
    fn record(&self, outcome: Result<(), &RedisError>) {
        match outcome {
            Ok(()) => self.circuit.succeeded(),
            Err(e) => self.circuit.failed(e),
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
                .arg(bucket_ms(entry.window_ms))
                .arg(entry.waiters.len());
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

fn failing() -> RedisError {
    RedisError::from(std::io::Error::other(
        "Redis is failing; it is asked again shortly",
    ))
}

fn no_answer() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

/// Answers every check of `entries` with `e`.
fn fail(entries: Vec<Entry>, e: &Arc<RedisError>) {
    for tx in entries.into_iter().flat_map(|entry| entry.waiters) {
        let _ = tx.send(Err(Arc::clone(e)));
    }
}

/// Hands each waiting check its usage from the script's answer.
fn deliver(entries: Vec<Entry>, answer: &[i64]) {
    let malformed = || {
        Arc::new(RedisError::from(std::io::Error::other(
            "the quota script answered in an unexpected shape",
        )))
    };
    let (Some(&now_ms), Some(rest)) = (answer.first(), answer.get(1..)) else {
        return fail(entries, &malformed());
    };
    let mut rows = rest.chunks_exact(4);
    for entry in entries {
        let Some(&[before, admitted, oldest, release]) = rows.next() else {
            fail(vec![entry], &malformed());
            continue;
        };
        let n = entry.waiters.len();
        let usages = batch_usages(n, [before, admitted, oldest, release], now_ms);
        for (tx, usage) in entry.waiters.into_iter().zip(usages) {
            let _ = tx.send(Ok(usage));
        }
    }
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
    batcher: &'a ScriptBatcher,
    armed: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.batcher
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

    /// The quotas and the login throttle share one circuit: once a quota check has waited out a
    /// silent Redis, a login count does not wait again, and neither does the next check.
    #[tokio::test]
    async fn one_timeout_opens_the_circuit_for_every_user_of_the_connection() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket); // accepted, never answered
            }
        });
        let counter = RedisCounter::connect(&url).unwrap();
        let started = std::time::Instant::now();
        assert!(counter.attempt("quota:k", 10, 86_400_000).await.is_err());
        assert!(started.elapsed() >= RESPONSE_TIMEOUT / 2, "Redis was asked");
        assert!(counter.is_failing());

        let started = std::time::Instant::now();
        let mut pipe = ::redis::pipe();
        pipe.get("login:k");
        assert!(counter
            .clone()
            .query::<Vec<Option<i64>>>(&pipe)
            .await
            .is_err());
        assert!(counter.attempt("quota:k", 10, 86_400_000).await.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "the open circuit answers at once: {:?}",
            started.elapsed()
        );
        held.abort();
    }
}
