//! Per-day quotas end to end: the 101st anonymous request of a rolling day is a 429
//! with the documented body and `Retry-After`; users are counted apart from addresses; bad credentials
//! count against the address; two `serve` processes sharing PostgreSQL and the real Redis
//! enforce one limit; a Redis outage leaves each replica enforcing its own.
//!
//! Every test uses its own Redis key prefix, so tests run in parallel without touching each
//! other's counters.

mod common;

use common::{
    basic, create_user, database, free_port, issue_token, redis_url, register, token, unique,
    Engine, ServeSpec, Server,
};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn prefix() -> String {
    format!("bourse:quota:{}:", unique("test"))
}

async fn get(server: &Server, path: &str, auth: Option<&str>) -> reqwest::Response {
    match auth {
        Some(auth) => server.get_auth(path, auth).await,
        None => server.get(path).await,
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

/// Asserts the documented 429 and returns its `Retry-After`.
async fn assert_throttled(r: reqwest::Response) -> u64 {
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().expect("seconds");
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    let body: Value = r.json().await.unwrap();
    let text = format!("Request was throttled. Expected available in {retry} seconds.");
    assert_eq!(body, json!({"message": text, "detail": text}));
    retry
}

fn rejections(metrics: &str, caller: &str) -> u64 {
    let series = format!("bourse_quota_rejections_total{{caller=\"{caller}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

/// The default limits (100 anonymous, 1000 per user), counters in memory or in Redis.
async fn the_hundred_and_first_anonymous_request_is_throttled(engine: Engine, redis: bool) {
    let db = database(engine).await;
    let mut spec = ServeSpec::embedded(&db)
        .env("BOURSE_QUOTA_ANON_PER_DAY", "100")
        .env("BOURSE_QUOTA_USER_PER_DAY", "1000");
    if redis {
        spec = spec
            .env("BOURSE_REDIS_URL", redis_url())
            .env("BOURSE_QUOTA_REDIS_PREFIX", prefix());
    }
    let server = Server::start(&spec).await;
    create_user(&db.url, "john", "johnpw", false);
    let john = token(&issue_token(&db.url, "john"));

    for i in 1..=100u64 {
        let r = get(&server, "/stocks", None).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(header(&r, "ratelimit-limit"), "100");
        assert_eq!(header(&r, "ratelimit-remaining"), (100 - i).to_string());
        assert_eq!(header(&r, "ratelimit-policy"), "100;w=86400");
        let reset: u64 = header(&r, "ratelimit-reset").parse().unwrap();
        assert!((86_300..=86_401).contains(&reset), "{reset}");
    }
    let retry = assert_throttled(get(&server, "/stocks", None).await).await;
    assert!(
        (86_300..=86_401).contains(&retry),
        "the first request leaves the window a day after its second: {retry}"
    );
    // Any tracked route, including unknown ones, is refused now.
    assert_throttled(get(&server, "/api/v1/stocks", None).await).await;
    assert_throttled(get(&server, "/no/such/route", None).await).await;

    // Operational routes are neither counted nor refused.
    for path in [
        "/_healthcheck",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs/",
    ] {
        let r = get(&server, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(!r.headers().contains_key("ratelimit-limit"), "{path}");
    }
    // An authenticated caller from the same address has a quota of their own.
    let r = get(&server, "/stocks", Some(&john)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-limit"), "1000");
    assert_eq!(header(&r, "ratelimit-remaining"), "999");

    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert_eq!(rejections(&metrics, "anonymous"), 3);
    assert_eq!(rejections(&metrics, "user"), 0);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hundred_and_first_anonymous_request_is_throttled_in_memory() {
    the_hundred_and_first_anonymous_request_is_throttled(Engine::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hundred_and_first_anonymous_request_is_throttled_in_redis() {
    the_hundred_and_first_anonymous_request_is_throttled(Engine::Postgres, true).await;
}

/// Small limits: bad credentials spend the address's quota; a user's keys share one quota.
async fn callers_are_counted_by_address_or_by_user(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_QUOTA_ANON_PER_DAY", "3")
        .env("BOURSE_QUOTA_USER_PER_DAY", "4")
        .env("BOURSE_REDIS_URL", redis_url())
        .env("BOURSE_QUOTA_REDIS_PREFIX", prefix());
    let server = Server::start(&spec).await;
    // Registering is an anonymous request: 1 of 3.
    let first_key = register(&server, "dave@example.com").await;
    let second_key = issue_token(&db.url, "dave@example.com");
    let wrong = token(&"0".repeat(64));
    // A wrong key answers 401 and counts against the address: 2 of 3.
    assert_eq!(get(&server, "/history", Some(&wrong)).await.status(), 401);
    // Bad Basic credentials on a route that needs none: 3 of 3.
    let r = get(&server, "/stocks", Some(&basic("dave", "nope"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    assert_throttled(get(&server, "/stocks", Some(&wrong)).await).await;
    assert_throttled(get(&server, "/stocks", None).await).await;

    // The user: 4 requests whichever key they use, then 429.
    for (i, key) in [&first_key, &second_key, &first_key, &second_key]
        .iter()
        .enumerate()
    {
        let r = get(&server, "/stocks", Some(&token(key))).await;
        assert_eq!(r.status(), 200, "user request {}", i + 1);
        assert_eq!(header(&r, "ratelimit-remaining"), (3 - i).to_string());
    }
    let retry = assert_throttled(get(&server, "/stocks", Some(&token(&second_key))).await).await;
    assert!((86_300..=86_401).contains(&retry), "{retry}");
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert_eq!(rejections(&metrics, "anonymous"), 2);
    assert_eq!(rejections(&metrics, "user"), 1);
    db.drop_db().await;
}

on_both_engines! {
    callers_are_counted_by_address_or_by_user => callers_are_counted_by_address_or_by_user;
}

/// Two `serve` processes behind one imaginary load balancer, sharing PostgreSQL and Redis:
/// requests alternate between them and still meet one limit per caller.
#[tokio::test(flavor = "multi_thread")]
async fn two_serve_processes_share_one_limit() {
    let db = database(Engine::Postgres).await;
    let spec = ServeSpec::mqtt(&db)
        .env("BOURSE_QUOTA_ANON_PER_DAY", "100")
        .env("BOURSE_QUOTA_USER_PER_DAY", "10")
        .env("BOURSE_REDIS_URL", redis_url())
        .env("BOURSE_QUOTA_REDIS_PREFIX", prefix());
    let a = Server::start(&spec).await;
    let mut other = spec.clone();
    other.client_id = unique("bourse-test");
    let b = Server::start(&other).await;
    let servers = [&a, &b];

    // Registering on one replica is the address's first request; the user is known to both.
    let key = token(&register(&a, "dave@example.com").await);
    for i in 0..99usize {
        let r = get(servers[i % 2], "/stocks", None).await;
        assert_eq!(r.status(), 200, "anonymous request {}", i + 2);
        assert_eq!(header(&r, "ratelimit-remaining"), (98 - i).to_string());
    }
    for server in servers {
        assert_throttled(get(server, "/stocks", None).await).await;
    }

    // The user has one quota on both replicas.
    for i in 0..10usize {
        let r = get(servers[(i + 1) % 2], "/stocks", Some(&key)).await;
        assert_eq!(r.status(), 200, "user request {}", i + 1);
        assert_eq!(header(&r, "ratelimit-remaining"), (9 - i).to_string());
    }
    for server in servers {
        assert_throttled(get(server, "/stocks", Some(&key)).await).await;
    }
    db.drop_db().await;
}

/// A Redis of this test's own on a free port, so the test can stop and restart it.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// While Redis is away each replica keeps enforcing the limit with its own counter, answering
/// promptly; once Redis is back, the counters are shared again.
#[tokio::test(flavor = "multi_thread")]
async fn quotas_hold_through_a_redis_outage() {
    let mut redis = OwnRedis::start(free_port());
    let db = database(Engine::Sqlite).await;
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_QUOTA_ANON_PER_DAY", "5")
        .env("BOURSE_REDIS_URL", redis.url());
    let server = Server::start(&spec).await;
    for i in 0..3u64 {
        let r = get(&server, "/stocks", None).await;
        assert_eq!(header(&r, "ratelimit-remaining"), (4 - i).to_string());
    }

    redis.stop();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&server, "/stocks", None).await.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429],
        "the replica's own counter: 5 more, then refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no request waits for the dead Redis: {:?}",
        started.elapsed()
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    let fallbacks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bourse_quota_backend_errors_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("backend error counter");
    assert!(fallbacks >= 6, "{fallbacks}");

    // Redis is back (empty): within a few probes the shared counter answers again.
    let redis = OwnRedis::start(redis.port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&server, "/stocks", None).await;
        if r.status() == 200 && header(&r, "ratelimit-remaining") == "4" {
            break;
        }
        assert!(Instant::now() < deadline, "Redis was not used again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("bourse:quota:anon:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys, ["bourse:quota:anon:127.0.0.1"], "the contract's key");
}
