//! Bounded answers, as an attacker or a careless client would try them, against the real binary
//! on SQLite and PostgreSQL: a 60,000-row minute series comes back a page at a time and the
//! `Link: rel="next"` headers lead through every row exactly once, in order (raw and resampled);
//! a `limit` over the maximum is a 400, never a silent clamp; dates outside what the engines store
//! are a 400, never a 500; ticks and `/stocks` page the same way.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{database, import, Engine, ServeSpec, Server};
use serde_json::Value;
use std::io::Write;

on_both_engines! {
    minute_series_pages_cover_every_row_once => minute_series_pages_cover_every_row_once;
    limits_over_the_maximum_are_refused => limits_over_the_maximum_are_refused;
    dates_outside_the_engines_are_400 => dates_outside_the_engines_are_400;
    ticks_and_stocks_page_through_links => ticks_and_stocks_page_through_links;
}

const MINUTE_BARS: i64 = 60_000;

fn first_minute() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// Writes `MINUTE_BARS` minute bars of `MIN` (every minute, from 2024-01-01) and 754 daily bars
/// of `DAY`, and imports them with the real CLI.
fn import_series(db_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(file, "symbol,date,open,high,low,close,volume").unwrap();
    for i in 0..MINUTE_BARS {
        let t = first_minute() + Duration::minutes(i);
        let p = 100 + i % 50;
        writeln!(
            file,
            "MIN,{},{p}.5,{}.25,{p},{p}.75,{}",
            t.to_rfc3339(),
            p + 1,
            i + 1
        )
        .unwrap();
    }
    for d in 0..754 {
        let day = Utc.with_ymd_and_hms(2019, 6, 28, 0, 0, 0).unwrap() + Duration::days(d);
        writeln!(file, "DAY,{},10,11,9,10.5,{d}", day.format("%Y-%m-%d")).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let out = import(db_url, &[path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The target of a `Link: <…>; rel="next"` header, if any.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = r.headers().get("link")?.to_str().unwrap().to_string();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    Some(
        link.trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string(),
    )
}

/// Follows the links from `path`; returns every page's rows.
async fn follow(server: &Server, path: &str, auth: Option<&str>) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(path) = next {
        let r = match auth {
            Some(a) => server.get_auth(&path, a).await,
            None => server.get(&path).await,
        };
        assert_eq!(r.status(), 200, "GET {path}");
        next = next_link(&r);
        let body: Value = r.json().await.unwrap();
        pages.push(body.as_array().unwrap().clone());
        assert!(pages.len() < 1000, "the links never end");
    }
    pages
}

fn field<'a>(rows: &'a [Value], key: &str) -> Vec<&'a str> {
    rows.iter().map(|r| r[key].as_str().unwrap()).collect()
}

async fn minute_series_pages_cover_every_row_once(engine: Engine) {
    let db = database(engine).await;
    let server = Server::start(&ServeSpec::embedded(&db)).await;
    import_series(&db.url);

    // Raw: the default page (5,000 rows), 12 pages, every minute once, in order.
    let pages = follow(&server, "/stocks/time-series/MIN", None).await;
    assert_eq!(pages.len(), 12);
    assert!(pages.iter().all(|p| p.len() == 5_000));
    let rows: Vec<Value> = pages.concat();
    let expected: Vec<String> = (0..MINUTE_BARS)
        .map(|i| {
            (first_minute() + Duration::minutes(i))
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        })
        .collect();
    assert_eq!(field(&rows, "date"), expected);
    assert_eq!(rows[59_999]["volume"], 60_000);

    // The same with an odd page size, a range, and under /api/v1 (the links keep the prefix).
    let pages = follow(
        &server,
        "/api/v1/stocks/time-series/MIN?start=2024-01-02&end=2024-01-03T12:00:00Z&limit=777",
        None,
    )
    .await;
    let rows = pages.concat();
    assert_eq!(rows.len(), 24 * 60 + 12 * 60 + 1);
    assert_eq!(field(&rows, "date"), expected[1440..1440 + rows.len()]);
    assert!(pages[..pages.len() - 1].iter().all(|p| p.len() == 777));

    // Resampled into bins of 7 minutes and 5 hours, paged by bins, against one big page.
    for query in [
        "frequency=Minute&interval=7",
        "frequency=Hourly&interval=5&start=2024-01-03T10:30:00Z",
    ] {
        let whole = follow(
            &server,
            &format!("/stocks/time-series/MIN?{query}&limit=10000"),
            None,
        )
        .await;
        assert_eq!(whole.len(), 1, "{query}: one page of 10,000");
        let paged = follow(
            &server,
            &format!("/stocks/time-series/MIN?{query}&limit=50"),
            None,
        )
        .await;
        assert!(paged.len() > 1, "{query}");
        assert_eq!(paged.concat(), whole[0], "{query}: pages = the whole");
    }

    // A daily series of 754 rows stays one page, without a link.
    let r = server.get("/stocks/time-series/DAY").await;
    assert!(r.headers().get("link").is_none());
    let day: Value = r.json().await.unwrap();
    assert_eq!(day.as_array().unwrap().len(), 754);
    db.drop_db().await;
}

async fn limits_over_the_maximum_are_refused(engine: Engine) {
    let db = database(engine).await;
    let server = Server::start(
        &ServeSpec::embedded(&db)
            .env("BOURSE_PAGE_DEFAULT", "50")
            .env("BOURSE_PAGE_MAX", "100"),
    )
    .await;
    import_series(&db.url);
    let page = server.get_json("/stocks/time-series/MIN").await;
    assert_eq!(page.as_array().unwrap().len(), 50, "BOURSE_PAGE_DEFAULT");
    let page = server.get_json("/stocks/time-series/MIN?limit=100").await;
    assert_eq!(page.as_array().unwrap().len(), 100);
    for path in [
        "/stocks/time-series/MIN?limit=101",
        "/stocks/time-series/MIN?limit=0",
        "/stocks/time-series/MIN?limit=-1",
        "/stocks/time-series/MIN?limit=99999999999",
        "/stocks/time-series/MIN?frequency=Hourly&limit=101",
        "/stocks?limit=101",
        "/stocks/00000000-0000-0000-0000-000000000000/ticks?limit=1001",
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("limit"),
            "{body}"
        );
    }
    // The document says what the server enforces: the configured maximum.
    let doc = server.get_json("/openapi.json").await;
    let limit = |path: &str| {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(limit("/stocks/time-series/{symbol}")["maximum"], 100);
    assert_eq!(limit("/stocks")["maximum"], 100);
    assert_eq!(limit("/stocks/{stock_id}/ticks")["maximum"], 1000);
    assert_eq!(limit("/orders")["maximum"], 500);
    db.drop_db().await;
}

async fn dates_outside_the_engines_are_400(engine: Engine) {
    let db = database(engine).await;
    let server = Server::start(&ServeSpec::embedded(&db)).await;
    import_series(&db.url);
    let stocks = server.get_json("/stocks").await;
    let id = stocks[0]["stock_id"].as_str().unwrap();
    for query in [
        "start=-5000-01-01",
        "end=-5000-01-01",
        "start=%2B10000-01-01",
        "end=%2B275000-01-01",
        "start=-0001-12-31",
        "after=-5000-01-01T00:00:00Z",
        "frequency=Monthly&start=-5000-01-01",
        "start=2024-13-01",
    ] {
        let path = format!("/stocks/time-series/MIN?{query}");
        let r = server.get(&path).await;
        assert_eq!(r.status(), 400, "{path}");
        let path = format!("/stocks/indicators/MIN/sma?{query}");
        assert_eq!(server.get(&path).await.status(), 400, "{path}");
    }
    for query in [
        "from=-5000-01-01",
        "to=%2B10000-01-01",
        "before=-5000-01-01",
    ] {
        let path = format!("/stocks/{id}/ticks?{query}");
        assert_eq!(server.get(&path).await.status(), 400, "{path}");
    }
    // The edges of the range are fine, whatever the offset does to them in UTC.
    for query in [
        "start=0000-01-01",
        "end=9999-12-31",
        "start=0000-01-01T00:00:00%2B01:00",
        "end=9999-12-31T23:59:59-01:00",
        "after=9999-12-31T23:59:59.999999Z",
        "frequency=Annual&start=0000-01-01&end=9999-12-31T23:00:00-05:00",
    ] {
        let path = format!("/stocks/time-series/MIN?{query}");
        assert_eq!(server.get(&path).await.status(), 200, "{path}");
    }
    let path = format!("/stocks/{id}/ticks?from=0000-01-01&to=9999-12-31T23:59:59-01:00");
    assert_eq!(server.get(&path).await.status(), 200, "{path}");
    db.drop_db().await;
}

async fn ticks_and_stocks_page_through_links(engine: Engine) {
    let db = database(engine).await;
    let server = Server::start(
        &ServeSpec::embedded(&db)
            .env("BOURSE_FEED_RATE", "400")
            .env("BOURSE_FEED_STOCKS", "7"),
    )
    .await;
    let stocks = server
        .eventually("/stocks", "7 stocks", |v| {
            v.as_array().is_some_and(|a| a.len() == 7)
        })
        .await;
    let stocks = stocks.as_array().unwrap();
    for query in ["", "include=technical_analysis&"] {
        let pages = follow(&server, &format!("/stocks?{query}limit=2"), None).await;
        assert_eq!(pages.len(), 4, "{query}");
        let ids: Vec<&str> = pages
            .iter()
            .flatten()
            .map(|s| s["stock_id"].as_str().unwrap())
            .collect();
        let all: Vec<&str> = field(stocks, "stock_id");
        assert_eq!(ids, all, "{query}: every stock once, by name");
    }
    assert_eq!(
        server
            .get("/stocks?after=00000000-0000-0000-0000-000000000000")
            .await
            .status(),
        404,
        "a cursor naming no stock"
    );

    // Ticks, newest first: a fixed upper bound so that the feed does not move the pages.
    let id = stocks[0]["stock_id"].as_str().unwrap();
    let path = format!("/stocks/{id}/ticks?limit=1000");
    let ticks = server
        .eventually(&path, "60 ticks", |v| {
            v.as_array().is_some_and(|a| a.len() >= 60)
        })
        .await;
    let to = ticks[0]["timestamp"].as_str().unwrap().to_string();
    let all = server
        .get_json(&format!(
            "/stocks/{id}/ticks?limit=1000&to={}",
            to.replace('+', "%2B")
        ))
        .await;
    let all = all.as_array().unwrap();
    let pages = follow(
        &server,
        &format!("/stocks/{id}/ticks?limit=7&to={}", to.replace('+', "%2B")),
        None,
    )
    .await;
    assert!(pages.len() >= 9);
    let paged: Vec<Value> = pages.concat();
    assert_eq!(&paged, all, "every tick once, newest first");
    let times = field(&paged, "timestamp");
    let parsed: Vec<DateTime<Utc>> = times
        .iter()
        .map(|t| DateTime::parse_from_rfc3339(t).unwrap().to_utc())
        .collect();
    assert!(
        parsed.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first"
    );
    db.drop_db().await;
}
