//! The Redis quota counter against the local Redis (127.0.0.1:6379, or `BOURSE_TEST_REDIS_URL`):
//! atomic across "replicas", the rolling window, expiry. Each test uses its own key prefix, so
//! tests run in parallel without touching each other's (or production's) keys.

use bourse_api::quota::redis::RedisCounter;
use bourse_api::quota::window::{bucket_of, expiry, BucketLog, Decision, Usage};
use bourse_api::quota::{Quota, QuotaConfig, Subject};
use redis::AsyncCommands;

const DAY_MS: i64 = 86_400_000;

fn redis_url() -> String {
    std::env::var("BOURSE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_key(what: &str) -> String {
    format!("bourse:quota:test-{}:{what}", uuid::Uuid::new_v4().simple())
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} does not answer: {e}", redis_url()))
}

/// The `used` of the admitted checks, sorted.
fn admitted_slots(usages: &[Usage]) -> Vec<u64> {
    let mut used: Vec<u64> = usages
        .iter()
        .filter(|u| u.admitted)
        .map(|u| u.used)
        .collect();
    used.sort_unstable();
    used
}

/// The requests a caller's list counts: its newest entry's running total less the one before
/// its oldest bucket, which must also be the sum of its buckets' counts.
async fn counted(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    let entries: Vec<String> = conn.lrange(key, 0, -1).await.unwrap();
    let fields = |entry: &String| -> Vec<i64> {
        entry
            .split(':')
            .map(|f| f.parse().unwrap_or_else(|_| panic!("a number in {entry}")))
            .collect()
    };
    let newest = fields(entries.last().expect("a log"));
    assert_eq!(newest.len(), 6, "bucket:count:total:oldest:base:expiry");
    let oldest = fields(&entries[0]);
    assert_eq!(
        newest[3], oldest[0],
        "the newest entry names the oldest bucket"
    );
    let sum: i64 = entries.iter().map(|entry| fields(entry)[1]).sum();
    assert_eq!(newest[2] - newest[4], sum);
    // Running totals grow by each entry's count.
    for pair in entries.windows(2) {
        let (a, b) = (fields(&pair[0]), fields(&pair[1]));
        assert!(a[0] < b[0], "buckets in order: {pair:?}");
        assert_eq!(a[2] + b[1], b[2], "running totals: {pair:?}");
    }
    u64::try_from(sum).expect("counts are not negative")
}

/// A key prefix of this test's own.
fn unique_prefix() -> String {
    format!("bourse:quota:test-{}:", uuid::Uuid::new_v4().simple())
}

/// A replica's quota with its counters in the test Redis under `prefix`.
fn redis_quota(prefix: &str, config: QuotaConfig) -> Quota {
    Quota::new(&QuotaConfig {
        redis_url: Some(redis_url()),
        redis_prefix: prefix.to_owned(),
        ..config
    })
    .expect("a valid Redis URL")
    .expect("a limit is set")
}

/// Writes a caller's log by hand: `(bucket, count)` oldest first, the running totals from 0,
/// the key's expiry an hour past the newest bucket's.
async fn write_log(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    buckets: &[(i64, u64)],
) {
    let (oldest, newest) = (buckets[0].0, buckets[buckets.len() - 1].0);
    let key_expiry = expiry(newest, 1000, DAY_MS) + 3_600_000;
    let mut total = 0;
    let entries: Vec<String> = buckets
        .iter()
        .map(|&(bucket, count)| {
            total += count;
            if bucket == newest {
                format!("{bucket}:{count}:{total}:{oldest}:0:{key_expiry}")
            } else {
                format!("{bucket}:{count}:{total}")
            }
        })
        .collect();
    let _: () = conn.rpush(key, entries).await.unwrap();
}

async fn redis_now_ms(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_admit_more_than_the_limit() {
    let key = unique_key("anon:192.0.2.1");
    let a = RedisCounter::connect(&redis_url()).unwrap();
    let b = RedisCounter::connect(&redis_url()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let counter = if i % 2 == 0 { &a } else { &b };
        tasks.push(counter.attempt(&key, 50, DAY_MS));
    }
    let usages: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("Redis answers"))
        .collect();
    assert_eq!(usages.iter().filter(|u| u.admitted).count(), 50);
    assert_eq!(
        admitted_slots(&usages),
        (1..=50).collect::<Vec<u64>>(),
        "each slot taken once"
    );
    assert!(usages.iter().filter(|u| !u.admitted).all(|u| u.used == 50));

    let mut conn = admin().await;
    assert_eq!(
        counted(&mut conn, &key).await,
        50,
        "refused requests are not recorded"
    );
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    // A day and a second after its newest bucket began, and a 24th of a day of slack (the
    // expiry is moved once per slack, not on every check).
    assert!(
        ttl > DAY_MS && ttl <= DAY_MS + 1000 + DAY_MS / 24,
        "the key expires: {ttl}"
    );
    let _: () = conn.del(&key).await.unwrap();
}

/// Checks that arrive together go in one script call, and get the answers they would get one by
/// one: on a single-threaded runtime the batch task runs only once every check has queued.
#[tokio::test(flavor = "current_thread")]
async fn checks_that_arrive_together_share_one_call_with_the_same_answers() {
    let hot = unique_key("anon:203.0.113.1");
    let cold = unique_key("anon:203.0.113.2");
    let counter = RedisCounter::connect(&redis_url()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..90 {
        let key = if i % 3 == 2 { &cold } else { &hot };
        tasks.push(counter.attempt(key, 50, DAY_MS));
    }
    let usages: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("Redis answers"))
        .collect();
    assert_eq!(counter.calls(), 1, "one call for 90 checks of two callers");
    let hot_usages: Vec<_> = (0..90).filter(|i| i % 3 != 2).map(|i| usages[i]).collect();
    let cold_usages: Vec<_> = (0..90).filter(|i| i % 3 == 2).map(|i| usages[i]).collect();
    // The hot caller takes the 50 slots one after the other and its 10 others are refused until
    // the first admission leaves the window: the answers of 60 checks one by one at one instant.
    let now = hot_usages[0].now_ms;
    let first_expiry = expiry(bucket_of(now, 1000), 1000, DAY_MS);
    assert!(hot_usages
        .iter()
        .chain(&cold_usages)
        .all(|u| u.now_ms == now && u.release_at_ms == Some(first_expiry)));
    assert_eq!(admitted_slots(&hot_usages), (1..=50).collect::<Vec<u64>>());
    let refused: Vec<_> = hot_usages.iter().filter(|u| !u.admitted).collect();
    assert_eq!(refused.len(), 10);
    assert!(refused.iter().all(|u| u.used == 50));
    assert_eq!(admitted_slots(&cold_usages), (1..=30).collect::<Vec<u64>>());

    // The next batch continues from there: 20 more for the cold caller, then refusals.
    let more: Vec<_> =
        futures::future::join_all((0..25).map(|_| counter.attempt(&cold, 50, DAY_MS)))
            .await
            .into_iter()
            .map(|r| r.expect("Redis answers"))
            .collect();
    assert_eq!(counter.calls(), 2);
    assert_eq!(admitted_slots(&more), (31..=50).collect::<Vec<u64>>());
    let refused: Vec<_> = more.iter().filter(|u| !u.admitted).collect();
    assert_eq!(refused.len(), 5);
    assert!(refused
        .iter()
        .all(|u| u.used == 50 && u.release_at_ms == Some(first_expiry)));

    let mut conn = admin().await;
    for key in [&hot, &cold] {
        assert_eq!(counted(&mut conn, key).await, 50, "every admission counted");
        let _: () = conn.del(key).await.unwrap();
    }
}

#[tokio::test]
async fn requests_leave_the_window_a_day_after_their_second() {
    let key = unique_key("user:x");
    let mut conn = admin().await;
    let now = redis_now_ms(&mut conn).await;
    // Three earlier requests: one a day and two seconds ago (gone), two within the day.
    let old = bucket_of(now - DAY_MS - 2000, 1000);
    let hour = bucket_of(now - 3_600_000, 1000);
    let minute = bucket_of(now - 60_000, 1000);
    write_log(&mut conn, &key, &[(old, 1), (hour, 1), (minute, 1)]).await;
    let counter = RedisCounter::connect(&redis_url()).unwrap();
    let usage = counter.attempt(&key, 3, DAY_MS).await.unwrap();
    assert!(usage.admitted);
    assert_eq!(usage.used, 3);
    assert_eq!(usage.release_at_ms, Some(expiry(hour, 1000, DAY_MS)));
    let refused = counter.attempt(&key, 3, DAY_MS).await.unwrap();
    assert!(!refused.admitted);
    assert_eq!(refused.release_at_ms, Some(expiry(hour, 1000, DAY_MS)));
    let decision = Decision::new(3, DAY_MS, refused);
    let expected = (expiry(hour, 1000, DAY_MS) - refused.now_ms) as f64 / 1000.0;
    assert_eq!(decision.retry_after(), expected.ceil() as u64);
    assert!((82_790..=82_801).contains(&decision.retry_after()));
    let head: String = conn.lindex(&key, 0).await.unwrap();
    assert_eq!(
        head,
        format!("{hour}:1:2"),
        "the expired bucket was dropped"
    );
    assert_eq!(counted(&mut conn, &key).await, 3);
    let _: () = conn.del(&key).await.unwrap();
}

/// The script against [`BucketLog`], the rule it implements, at the instants Redis reports:
/// random batches of random sizes under limits that change (so windows fill, buckets expire
/// and a lowered limit waits for several buckets), with a 300 ms window counted in
/// milliseconds so that everything happens within the test.
#[tokio::test(flavor = "current_thread")]
async fn the_script_follows_the_bucket_rule() {
    use rand::{Rng, SeedableRng};
    let key = unique_key("anon:198.51.100.99");
    let window = 300;
    let counter = RedisCounter::connect(&redis_url()).unwrap();
    let mut model = BucketLog::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let (mut admitted, mut refused) = (0, 0);
    for round in 0..120 {
        let limit = rng.gen_range(1..=40u64);
        let n = rng.gen_range(1..=12usize);
        let usages: Vec<Usage> =
            futures::future::join_all((0..n).map(|_| counter.attempt(&key, limit, window)))
                .await
                .into_iter()
                .map(|r| r.expect("Redis answers"))
                .collect();
        for (i, usage) in usages.iter().enumerate() {
            assert_eq!(
                *usage,
                model.attempt(usage.now_ms, window, limit),
                "round {round}, request {i} of {n}, limit {limit}"
            );
            if usage.admitted {
                admitted += 1;
            } else {
                refused += 1;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(rng.gen_range(0..25))).await;
    }
    assert!(admitted > 100 && refused > 100, "{admitted} / {refused}");
    let mut conn = admin().await;
    let _: () = conn.del(&key).await.unwrap();
}

/// A key left by an earlier version (a sorted set per caller) does not fail the checks: it is
/// replaced by a fresh log.
#[tokio::test]
async fn a_key_of_the_earlier_format_is_replaced() {
    let key = unique_key("anon:192.0.2.77");
    let mut conn = admin().await;
    let _: () = conn.zadd(&key, "member", 1).await.unwrap();
    let counter = RedisCounter::connect(&redis_url()).unwrap();
    let usage = counter.attempt(&key, 5, DAY_MS).await.expect("answered");
    assert!(usage.admitted);
    assert_eq!(usage.used, 1);
    assert_eq!(counted(&mut conn, &key).await, 1);
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn the_quota_uses_its_prefix_and_limits_per_kind() {
    let prefix = unique_prefix();
    let quota = redis_quota(
        &prefix,
        QuotaConfig {
            anonymous: 2,
            user: 3,
            ..QuotaConfig::default()
        },
    );
    let anon = Subject::address("198.51.100.7".parse().unwrap());
    let user = Subject::User(uuid::Uuid::new_v4());
    let mut admitted = Vec::new();
    for subject in [&anon, &anon, &anon, &user, &user, &user, &user] {
        admitted.push(quota.check(subject).await.unwrap().admitted);
    }
    assert_eq!(admitted, [true, true, false, true, true, true, false]);
    let mut conn = admin().await;
    let anon_key = format!("{prefix}anon:198.51.100.7");
    assert_eq!(counted(&mut conn, &anon_key).await, 2);
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let _: () = conn.del(key).await.unwrap();
    }
}

/// Once Redis has refused a caller, this replica refuses the caller's next requests itself
/// until the release Redis named, then asks Redis again.
#[tokio::test]
async fn a_refused_caller_is_answered_here_until_its_release() {
    let prefix = unique_prefix();
    let window = std::time::Duration::from_secs(2);
    let quota = redis_quota(
        &prefix,
        QuotaConfig {
            anonymous: 2,
            user: 0,
            window,
            ..QuotaConfig::default()
        },
    );
    let anon = Subject::address("198.51.100.42".parse().unwrap());
    let started = std::time::Instant::now();
    for _ in 0..2 {
        assert!(quota.check(&anon).await.unwrap().admitted);
    }
    let first_refusal = quota.check(&anon).await.unwrap();
    assert!(!first_refusal.admitted);
    let calls = quota.redis_calls().expect("a Redis backend");
    assert_eq!(calls, 3, "one call a check, one at a time");
    for _ in 0..20 {
        let refused = quota.check(&anon).await.unwrap();
        assert!(!refused.admitted);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after() <= first_refusal.retry_after());
    }
    assert_eq!(quota.redis_calls(), Some(calls), "answered here");
    // Another caller still goes to Redis.
    let other = Subject::address("198.51.100.43".parse().unwrap());
    assert!(quota.check(&other).await.unwrap().admitted);
    assert_eq!(quota.redis_calls(), Some(calls + 1));

    // After the window (and its 1 ms bucket) the first admission has left: Redis admits again.
    tokio::time::sleep(
        (started + window + std::time::Duration::from_millis(300))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert!(quota.check(&anon).await.unwrap().admitted);
    assert_eq!(quota.redis_calls(), Some(calls + 2));
    let mut conn = admin().await;
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    for key in keys {
        let _: () = conn.del(key).await.unwrap();
    }
}

/// Every check of a caller sending one request at a time is a call.
#[tokio::test]
async fn every_check_of_a_caller_one_at_a_time_goes_to_redis() {
    let prefix = unique_prefix();
    let quota = redis_quota(
        &prefix,
        QuotaConfig {
            anonymous: 0,
            user: 1_000_000,
            ..QuotaConfig::default()
        },
    );
    let id = uuid::Uuid::new_v4();
    for _ in 0..50 {
        assert!(quota.check(&Subject::User(id)).await.unwrap().admitted);
    }
    assert_eq!(quota.redis_calls(), Some(50));
    let mut conn = admin().await;
    let key = format!("{prefix}user:{id}");
    assert_eq!(counted(&mut conn, &key).await, 50);
    let _: () = conn.del(&key).await.unwrap();
}
