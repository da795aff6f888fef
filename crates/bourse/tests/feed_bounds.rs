//! The feed under attack: oversized and badly dated messages, a tick the database refuses, a
//! database outage, forged log lines, and storage that must stay bounded. Real binary, real
//! Mosquitto, SQLite and PostgreSQL.

mod common;

use bourse_store::Store;
use chrono::{DateTime, TimeDelta, Utc};
use common::{database, publish, tick, Engine, RoleOptions, ServeSpec, Server};
use std::time::{Duration, Instant};

on_both_engines! {
    an_oversized_message_is_set_aside_and_later_ticks_land => an_oversized_message_is_set_aside_and_later_ticks_land;
    timestamps_out_of_range_never_stop_or_freeze_the_feed => timestamps_out_of_range_never_stop_or_freeze_the_feed;
    a_batch_the_database_refuses_is_split_and_the_rest_commits => a_batch_the_database_refuses_is_split_and_the_rest_commits;
    old_ticks_go_within_a_minute_and_their_bars_stay => old_ticks_go_within_a_minute_and_their_bars_stay;
}

fn new_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

async fn store(db_url: &str) -> Store {
    Store::connect(db_url, &Default::default()).await.unwrap()
}

/// `bourse_ticks_rejected_total{reason="…"}` as the server reports it.
async fn rejected(server: &Server, reason: &str) -> f64 {
    let metrics = server.get("/metrics").await.text().await.unwrap();
    let series = format!("bourse_ticks_rejected_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

/// Polls `check` until it holds, for at most `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs SQL on the test database as an operator would (no bourse code involved).
async fn execute(engine: Engine, url: &str, sql: &str) {
    use sqlx::Connection;
    match engine {
        Engine::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
        Engine::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    }
}

async fn an_oversized_message_is_set_aside_and_later_ticks_land(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let id = new_id().to_string();
    let now = Utc::now();
    // 300 KB: over the tick limit (4 KiB), under the broker's and the client's packet limits.
    let mut huge = tick(&id, "Huge", "1", &at(now));
    huge.extend(vec![b' '; 300_000]);
    // Just over the tick limit, and otherwise a valid tick.
    let mut padded = tick(&id, "Padded", "2", &at(now));
    padded.resize(4097, b' ');
    publish(
        spec.topic(),
        &[
            huge,
            padded,
            tick(&id, "CIB", "28", &at(now - TimeDelta::seconds(1))),
            tick(&id, "CIB", "29", &at(now)),
        ],
    )
    .await;
    server
        .eventually(
            &format!("/stocks/{id}"),
            "good ticks after the oversized ones",
            |v| v["price"] == 29.0 && v["name"] == "CIB",
        )
        .await;
    assert_eq!(rejected(&server, "too_large").await, 2.0);
    let store = store(&db.url).await;
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert!(
            d.reason.starts_with("too_large: payload of "),
            "{}",
            d.reason
        );
        assert_eq!(d.payload.len(), 4096, "kept up to the tick limit");
    }
    assert_eq!(
        store.ticks(new_id(), None, None, 10).await.unwrap().len(),
        0
    );
    store.close().await;
    // Still consuming.
    publish(spec.topic(), &[tick(&id, "CIB", "30", &at(Utc::now()))]).await;
    server
        .eventually(&format!("/stocks/{id}"), "still consuming", |v| {
            v["price"] == 30.0
        })
        .await;
    db.drop_db().await;
}

async fn timestamps_out_of_range_never_stop_or_freeze_the_feed(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let id = new_id().to_string();
    let now = Utc::now();
    publish(
        spec.topic(),
        &[
            tick(&id, "CIB", "10", &at(now - TimeDelta::seconds(2))),
            tick(&id, "CIB", "666", "-5000-01-01 00:00:00"),
            tick(&id, "CIB", "999", "9999-12-31 00:00:00"),
            tick(&id, "CIB", "998", &at(now + TimeDelta::minutes(10))),
            tick(&id, "CIB", "11", &at(now - TimeDelta::seconds(1))),
        ],
    )
    .await;
    server
        .eventually(
            &format!("/stocks/{id}"),
            "the tick after the bad ones",
            |v| v["price"] == 11.0,
        )
        .await;
    // Later real ticks keep moving the price: nothing far-future holds it.
    publish(spec.topic(), &[tick(&id, "CIB", "12", &at(Utc::now()))]).await;
    server
        .eventually(&format!("/stocks/{id}"), "not frozen", |v| {
            v["price"] == 12.0
        })
        .await;
    assert_eq!(rejected(&server, "timestamp_out_of_range").await, 3.0);
    let store = store(&db.url).await;
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(dead
        .iter()
        .all(|d| d.reason.starts_with("timestamp_out_of_range: ")));
    let stored = store
        .ticks(id.parse().unwrap(), None, None, 10)
        .await
        .unwrap();
    let prices: Vec<String> = stored.iter().map(|t| t.price.to_string()).collect();
    assert_eq!(prices, ["12", "11", "10"]);
    store.close().await;
    db.drop_db().await;
}

async fn a_batch_the_database_refuses_is_split_and_the_rest_commits(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let mut server = Server::start(&spec).await; // creates the schema and the MQTT session
    assert!(server.terminate().success());
    // The database refuses one valid tick: a rule an operator added, standing for any value the
    // engine will not store.
    execute(
        engine,
        &db.url,
        match engine {
            Engine::Postgres => "ALTER TABLE ticks ADD CONSTRAINT refuse_666 CHECK (price <> 666)",
            Engine::Sqlite => {
                "CREATE TRIGGER refuse_666 BEFORE INSERT ON ticks WHEN NEW.price = '666' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END"
            }
        },
    )
    .await;
    // Published while the server is down, so they arrive in a burst and commit in batches.
    let id = new_id().to_string();
    let start = Utc::now() - TimeDelta::minutes(1);
    let messages: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            let price = if i == 37 {
                "666".to_string()
            } else {
                format!("{}", 100 + i)
            };
            tick(
                &id,
                "CIB",
                &price,
                &at(start + TimeDelta::milliseconds(i * 100)),
            )
        })
        .collect();
    publish(spec.topic(), &messages).await;
    let log = tempfile(&format!("refuse-{engine:?}"));
    let server = Server::start_role_with("serve", &spec.vars(), &log.options()).await;
    let store = store(&db.url).await;
    let uuid = id.parse().unwrap();
    within(Duration::from_secs(20), "59 ticks committed", || async {
        store.ticks(uuid, None, None, 100).await.unwrap().len() == 59
    })
    .await;
    server
        .eventually(&format!("/stocks/{id}"), "latest price", |v| {
            v["price"] == 159.0
        })
        .await;
    assert_eq!(rejected(&server, "refused_by_database").await, 1.0);
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.starts_with("refused_by_database: "),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].payload, messages[37]);
    // It was a batch of several ticks that was split, not one tick at a time.
    let text = log.read();
    let split = text
        .lines()
        .filter(|l| l.contains("the database refused a feed batch; splitting it"))
        .filter_map(|l| {
            l.split("ticks=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max();
    assert!(split.is_some_and(|n| n > 2), "{text}");
    store.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_is_retried_and_nothing_is_lost() {
    let db = database(Engine::Postgres).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let name = db.name.clone().unwrap();
    let admin = bourse_store::testing::pg_admin_url();
    // The database goes away: existing connections are cut, new ones refused.
    execute(
        Engine::Postgres,
        &admin,
        &format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    )
    .await;
    let id = new_id().to_string();
    let now = Utc::now();
    let messages: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            tick(
                &id,
                "CIB",
                &format!("{}", 50 + i),
                &at(now - TimeDelta::seconds(20 - i)),
            )
        })
        .collect();
    publish(spec.topic(), &messages).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    execute(
        Engine::Postgres,
        &admin,
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
    )
    .await;
    let store = store(&db.url).await;
    let uuid = id.parse().unwrap();
    within(
        Duration::from_secs(30),
        "every tick after the outage",
        || async { store.ticks(uuid, None, None, 100).await.unwrap().len() == 20 },
    )
    .await;
    assert_eq!(
        store.dead_letter_count().await.unwrap(),
        0,
        "nothing set aside"
    );
    for reason in bourse_feed::metrics::REJECT_REASONS {
        assert_eq!(rejected(&server, reason).await, 0.0, "{reason}");
    }
    store.close().await;
    db.drop_db().await;
}

async fn old_ticks_go_within_a_minute_and_their_bars_stay(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db)
        .env("BOURSE_TICK_RETENTION_DAYS", "30")
        .env("BOURSE_RETENTION_INTERVAL_SECS", "1")
        .env("BOURSE_RETENTION_BATCH", "2")
        .env("BOURSE_DEAD_LETTER_MAX_ROWS", "3");
    let server = Server::start(&spec).await;
    let id = new_id().to_string();
    let minute = |t: DateTime<Utc>| t.timestamp().div_euclid(60) * 60;
    let old = DateTime::from_timestamp(minute(Utc::now() - TimeDelta::days(40)), 0).unwrap();
    let now = Utc::now();
    let mut messages: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            tick(
                &id,
                "CIB",
                &format!("{}", 10 + i),
                &at(old + TimeDelta::seconds(i * 10)),
            )
        })
        .chain((0..3).map(|i| {
            let t = old + TimeDelta::minutes(1) + TimeDelta::seconds(i);
            tick(&id, "CIB", &format!("{}", 20 + i), &at(t))
        }))
        .collect();
    messages.push(tick(&id, "CIB", "30", &at(now - TimeDelta::days(29))));
    messages.push(tick(&id, "CIB", "31", &at(now)));
    // Dead letters over the row bound.
    messages.extend((0..5).map(|i| format!("garbage {i}").into_bytes()));
    publish(spec.topic(), &messages).await;
    let store = store(&db.url).await;
    let uuid = id.parse().unwrap();
    within(
        Duration::from_secs(60),
        "ticks past the retention deleted",
        || async {
            let kept = store.ticks(uuid, None, None, 100).await.unwrap();
            let prices: Vec<String> = kept.iter().map(|t| t.price.to_string()).collect();
            prices == ["31", "30"]
        },
    )
    .await;
    // Their minute bars stay, as they were built from all the ticks.
    let bars = store
        .bars("CIB", None, Some(old + TimeDelta::minutes(2)))
        .await
        .unwrap();
    let summary: Vec<(i64, String, String, String, String, i64)> = bars
        .iter()
        .map(|b| {
            let s = |d: rust_decimal::Decimal| d.to_string();
            (
                b.time.timestamp(),
                s(b.open),
                s(b.high),
                s(b.low),
                s(b.close),
                b.volume,
            )
        })
        .collect();
    let m = old.timestamp();
    assert_eq!(
        summary,
        [
            (m, "10".into(), "14".into(), "10".into(), "14".into(), 5),
            (
                m + 60,
                "20".into(),
                "22".into(),
                "20".into(),
                "22".into(),
                3
            )
        ]
    );
    within(
        Duration::from_secs(60),
        "dead letters bounded in number",
        || async { store.dead_letter_count().await.unwrap() == 3 },
    )
    .await;
    // The newest dead letter, but past its age (30 days by default): it goes too.
    let old_letter = bourse_store::feed::DeadLetter {
        source: "test".into(),
        payload: b"old".to_vec(),
        reason: "syntax: old".into(),
        received_at: now - TimeDelta::days(31),
    };
    store.ingest(&[], &[old_letter], now).await.unwrap();
    within(
        Duration::from_secs(60),
        "dead letters bounded in age",
        || async {
            let kept: Vec<Vec<u8>> = store
                .dead_letters(10)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.payload)
                .collect();
            kept == [b"garbage 4".to_vec(), b"garbage 3".to_vec()]
        },
    )
    .await;
    assert_eq!(server.get("/readyz").await.status(), 200);
    store.close().await;
    db.drop_db().await;
}

/// A payload with line breaks must not forge log lines, in either log format.
#[tokio::test(flavor = "multi_thread")]
async fn a_payload_cannot_forge_a_log_line() {
    let forged = "2026-12-06T00:00:00.000000Z  INFO bourse: admin logged in";
    for format in ["text", "json"] {
        let db = database(Engine::Sqlite).await;
        let spec = ServeSpec::mqtt(&db).env("BOURSE_LOG_FORMAT", format);
        let log = tempfile(&format!("forge-{format}"));
        let server = Server::start_role_with("serve", &spec.vars(), &log.options()).await;
        let payload = format!("not a tick\n{forged}\r\n\u{1b}[2J{forged}\u{2028}");
        publish(spec.topic(), &[payload.into_bytes()]).await;
        within(Duration::from_secs(10), "the rejection logged", || async {
            log.read().contains("rejected feed message")
        })
        .await;
        let text = log.read();
        for line in text.lines() {
            assert!(
                !line.starts_with(forged),
                "{format}: forged line in\n{text}"
            );
            assert!(
                !line.chars().any(|c| c.is_control()),
                "{format}: control character in {line:?}"
            );
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            }
        }
        let line = text
            .lines()
            .find(|l| l.contains("rejected feed message"))
            .unwrap();
        assert!(line.contains(forged), "the payload is still shown: {line}");
        if format == "text" {
            assert!(line.contains(r"not a tick\n2026-12-06"), "{line}");
        }
        drop(server);
        db.drop_db().await;
    }
}

/// A file for a spawned server's log, removed on drop.
struct LogFile(std::path::PathBuf);

fn tempfile(name: &str) -> LogFile {
    LogFile(std::env::temp_dir().join(format!("bourse-{name}-{}.log", new_id().simple())))
}

impl LogFile {
    fn options(&self) -> RoleOptions {
        RoleOptions {
            log: Some(self.0.clone()),
            ..RoleOptions::default()
        }
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
