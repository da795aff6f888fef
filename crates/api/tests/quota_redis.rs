//! The Redis quota counter against the local Redis (127.0.0.1:6379, or `BOURSE_TEST_REDIS_URL`):
//! atomic across "replicas", the rolling window, expiry. Each test uses its own key prefix, so
//! tests run in parallel without touching each other's (or production's) keys.

use bourse_api::quota::redis::RedisCounter;
use bourse_api::quota::window::Decision;
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
    let mut used: Vec<u64> = usages
        .iter()
        .filter(|u| u.admitted)
        .map(|u| u.used)
        .collect();
    used.sort_unstable();
    assert_eq!(used, (1..=50).collect::<Vec<u64>>(), "each slot taken once");
    assert!(usages.iter().filter(|u| !u.admitted).all(|u| u.used == 50));

    let mut conn = admin().await;
    let members: u64 = conn.zcard(&key).await.unwrap();
    assert_eq!(members, 50, "refused requests are not recorded");
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= DAY_MS, "the key expires: {ttl}");
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn requests_leave_the_window_a_day_after_they_were_admitted() {
    let key = unique_key("user:x");
    let mut conn = admin().await;
    let now = redis_now_ms(&mut conn).await;
    // Three earlier requests: one just over a day ago (gone), two within the day.
    let _: () = redis::cmd("ZADD")
        .arg(&key)
        .arg(now - DAY_MS - 1)
        .arg("old")
        .arg(now - 3_600_000)
        .arg("an-hour-ago")
        .arg(now - 60_000)
        .arg("a-minute-ago")
        .query_async(&mut conn)
        .await
        .unwrap();
    let counter = RedisCounter::connect(&redis_url()).unwrap();
    let usage = counter.attempt(&key, 3, DAY_MS).await.unwrap();
    assert!(usage.admitted);
    assert_eq!(usage.used, 3);
    let refused = counter.attempt(&key, 3, DAY_MS).await.unwrap();
    assert!(!refused.admitted);
    assert_eq!(refused.release_at_ms, Some(now - 3_600_000));
    let decision = Decision::new(3, DAY_MS, refused);
    let expected = (DAY_MS - 3_600_000 - (refused.now_ms - now)) as f64 / 1000.0;
    assert_eq!(decision.retry_after(), expected.ceil() as u64);
    assert!((82_790..=82_800).contains(&decision.retry_after()));
    let old: Option<f64> = conn.zscore(&key, "old").await.unwrap();
    assert_eq!(old, None, "pruned");
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn the_quota_uses_its_prefix_and_limits_per_kind() {
    let prefix = format!("bourse:quota:test-{}:", uuid::Uuid::new_v4().simple());
    let quota = Quota::new(&QuotaConfig {
        anonymous: 2,
        user: 3,
        redis_url: Some(redis_url()),
        redis_prefix: prefix.clone(),
        ..QuotaConfig::default()
    })
    .unwrap()
    .unwrap();
    let anon = Subject::Anonymous("198.51.100.7".into());
    let user = Subject::User(uuid::Uuid::new_v4());
    let mut admitted = Vec::new();
    for subject in [&anon, &anon, &anon, &user, &user, &user, &user] {
        admitted.push(quota.check(subject).await.unwrap().admitted);
    }
    assert_eq!(admitted, [true, true, false, true, true, true, false]);
    let mut conn = admin().await;
    let anon_key = format!("{prefix}anon:198.51.100.7");
    let members: u64 = conn.zcard(&anon_key).await.unwrap();
    assert_eq!(members, 2);
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let _: () = conn.del(key).await.unwrap();
    }
}
