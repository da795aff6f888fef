//! Connection bounds, written as the attacks they stop, against the real binary: half-sent
//! requests, more connections than allowed, more event streams than allowed, and an order whose
//! request times out.

mod common;

use common::{basic, create_user, database, Engine, ServeSpec, Server};
use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::Connection;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

on_both_engines! {
    a_timed_out_order_says_it_may_exist_and_a_retry_finds_it => order_timeout;
}

fn addr(server: &Server) -> &str {
    server.base.trim_start_matches("http://")
}

/// A client that opens a connection of its own for every request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// True once the peer closed `stream` (EOF or reset), false if it is still open at `deadline`.
async fn closed_by(mut stream: TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), read_to_end)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_are_closed_within_the_header_timeout() {
    let db = database(Engine::Sqlite).await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_HTTP_HEADER_TIMEOUT_SECS", "2");
    let server = Server::start(&spec).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
        stream
            .write_all(b"GET /stocks HTTP/1.1\r\nHost: bourse\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // Meanwhile complete requests are served.
    let r = fresh_client()
        .get(server.url("/_healthcheck"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // All 300 closed within the timeout (2 s from the last one sent, plus scheduling slack).
    let deadline = Instant::now() + Duration::from_secs(4);
    let closed = join_all(held.into_iter().map(|s| closed_by(s, deadline))).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of 300 half-sent connections still open");
    assert!(started.elapsed() >= Duration::from_secs(2), "not before it");
    assert_eq!(server.get("/_healthcheck").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_maximum_get_503_while_health_is_answered() {
    let db = database(Engine::Sqlite).await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_HTTP_MAX_CONNECTIONS", "20");
    let server = Server::start(&spec).await;
    // Twenty connections that say nothing take every slot (the header timeout is 30 s).
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr(&server)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = fresh_client();
    let r = client.get(server.url("/stocks")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "too many connections; retry shortly"})
    );
    for path in ["/_healthcheck", "/readyz"] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} is answered over the limit");
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bourse_http_refused_total{what=\"connection\"}"),
        "refusals are counted"
    );
    // Once they go, the slots are free again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client
            .get(server.url("/stocks"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots not freed: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_beyond_the_maximum_get_503() {
    let db = database(Engine::Sqlite).await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_HTTP_MAX_STREAMS", "3");
    let server = Server::start(&spec).await;
    let client = reqwest::Client::new();
    let open = || client.get(server.url("/stocks/stream")).send();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let r = open().await.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let r = open().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("event streams"));
    // A closed stream gives its place back (noticed at its next event: ticks flow at 5/s).
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = open().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database holds the order's insert past the request timeout: the answer is not a bare
/// error but says the order may exist and how to get it; the retry with the same key then
/// yields exactly one order.
async fn order_timeout(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_REQUEST_TIMEOUT_SECS", "1");
    let server = Server::start(&spec).await;
    create_user(&db.url, "john", "johnpw", false);
    let john = basic("john", "johnpw");
    let order = json!({"type": "limit", "side": "buy", "instrument": "US0378331005",
                       "quantity": 10, "limit_price": 150.25});
    let post = || {
        server
            .http
            .post(server.url("/orders"))
            .header("authorization", &john)
            .header("idempotency-key", "k-timeout")
            .json(&order)
            .send()
    };

    let lock = hold_orders_table(engine, &db.url).await;
    let r = post().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("may have been stored") && message.contains("\"k-timeout\""),
        "{message}"
    );
    lock.release().await;

    let r = post().await.unwrap();
    assert!([200, 201].contains(&r.status().as_u16()), "{}", r.status());
    let list: Value = server
        .http
        .get(server.url("/orders"))
        .header("authorization", &john)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "exactly one order: {list}"
    );
    db.drop_db().await;
}

/// A transaction of the test's own that keeps the server from writing orders.
enum Lock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

async fn hold_orders_table(engine: Engine, url: &str) -> Lock {
    match engine {
        Engine::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            Lock::Postgres(conn)
        }
        Engine::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Lock::Sqlite(conn)
        }
    }
}

impl Lock {
    async fn release(self) {
        match self {
            Lock::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Lock::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

/// Peak resident memory of a process, from `/proc/<pid>/status`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Forty concurrent reads of distinct ranges, round after round, each answer ~0.5 MB and kept
/// for a minute: unbounded, the cache would hold ~200 MB by the end. With a series cache of
/// 8 MiB the process's peak grows by that plus what forty answers in flight take, no more.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_distinct_series_reads_stay_within_the_cache_bound() {
    const CACHE: u64 = 8 << 20;
    let db = database(Engine::Sqlite).await;
    let dir = std::env::temp_dir().join(common::unique("bourse-bounds"));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("mem.csv");
    let first = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
    let mut rows = String::from("symbol,date,open,high,low,close,volume\n");
    for day in 0..5000 {
        let date = first + chrono::Days::new(day);
        rows.push_str(&format!(
            "MEM,{date},10.5,11.25,9.75,10.125,{}\n",
            1000 + day
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    let out = common::import(&db.url, &[csv.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_READ_CACHE_MS", "60000")
        .env("BOURSE_SERIES_CACHE_BYTES", CACHE.to_string());
    let server = Server::start(&spec).await;
    let pid = server.child.id();

    let round = |n: u64| {
        join_all((0..40).map(|i| {
            let start = first + chrono::Days::new(n * 40 + i);
            let url = server.url(&format!("/stocks/time-series/MEM?start={start}"));
            let http = server.http.clone();
            async move {
                let r = http.get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap().len()
            }
        }))
    };
    let sizes = round(0).await;
    assert!(sizes.iter().all(|s| *s > 400_000), "answers of ~0.5 MB");
    let before = peak_rss(pid);
    let mut served = 0;
    for n in 1..=10 {
        served += round(n).await.iter().sum::<usize>();
    }
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(
        served > 150 << 20,
        "{served} bytes served in distinct answers"
    );
    assert!(
        grown < CACHE + (48 << 20),
        "peak grew by {} MiB",
        grown >> 20
    );
    std::fs::remove_dir_all(&dir).ok();
}
