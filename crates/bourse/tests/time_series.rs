//! Time series and indicators end to end: the daily OHLCV fixture loaded with the real
//! `bourse import`, read back through `GET /stocks/time-series/{symbol}` and
//! `GET /stocks/indicators/{symbol}/{name}`, compared with the figures published with the data set and the
//! domain's reference fixtures (pandas / TA-Lib); bad rows reported by file and line; live ticks
//! over the real Mosquitto rolled up into 1-minute bars. SQLite and PostgreSQL.

mod common;

use common::{database, import, publish, tick, Engine, ServeSpec, Server};
use serde_json::{json, Value};
use std::path::Path;

on_both_engines! {
    imported_csv_raw_and_resampled => imported_csv_raw_and_resampled;
    bad_parameters_and_unknown_names => bad_parameters_and_unknown_names;
    indicators_match_the_reference_fixtures => indicators_match_the_reference_fixtures;
    import_reports_bad_rows_by_file_and_line => import_reports_bad_rows_by_file_and_line;
    live_ticks_roll_up_into_minute_bars => live_ticks_roll_up_into_minute_bars;
}

const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../domain/tests/fixtures/stocks_ohlcv.csv"
);
const RESAMPLE_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../domain/tests/fixtures/resample_amzn.json"
);
const INDICATOR_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../domain/tests/fixtures/indicators.json"
);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts a server on `db`, imports the shared CSV into it with the CLI, and returns the server.
async fn server_with_shared_csv(db: &bourse_store::testing::TestDb) -> Server {
    let server = Server::start(&ServeSpec::embedded(db)).await;
    let out = import(&db.url, &[SHARED_CSV]);
    assert!(out.status.success(), "import failed: {}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with("imported 1508 rows, skipped 0, from 1 file in "),
        "{summary}"
    );
    assert!(summary.contains(" rows/s)"), "{summary}");
    server
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("an array: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

fn assert_rel(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let scale = expected.abs().max(1e-12);
    assert!(
        ((actual - expected) / scale).abs() <= tolerance,
        "{what}: got {actual}, expected {expected}"
    );
}

async fn imported_csv_raw_and_resampled(engine: Engine) {
    let db = database(engine).await;
    let server = server_with_shared_csv(&db).await;

    // Raw: 754 rows per symbol, by date, exact decimals, documented shape.
    let raw = server.get_json("/stocks/time-series/AMZN").await;
    let raw = rows(&raw);
    assert_eq!(raw.len(), 754);
    assert_eq!(
        raw[0],
        json!({"symbol": "AMZN", "date": "2019-06-28", "open": 95.455002, "high": 95.647003,
               "low": 94.199997, "close": 94.681503, "volume": 60748000})
    );
    assert_eq!(raw[753]["date"], "2022-06-24");
    let dates: Vec<&str> = raw.iter().map(|r| r["date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] < w[1]), "ordered by date");
    let tsla = server.get_json("/stocks/time-series/TSLA").await;
    assert_eq!(rows(&tsla).len(), 754);
    assert_eq!(
        server.get_json("/api/v1/stocks/time-series/AMZN").await,
        Value::Array(raw.clone()),
        "/api/v1 alias"
    );

    // Monthly: 37 rows, labelled by the first of the month.
    let monthly = server
        .get_json("/stocks/time-series/AMZN?frequency=Monthly")
        .await;
    let monthly = rows(&monthly);
    assert_eq!(monthly.len(), 37);
    assert_eq!(monthly[0]["period_start"], "2019-06-01");
    assert!(monthly[0].get("date").is_none());
    assert_eq!(monthly[36]["period_start"], "2022-06-01");

    // Annual: the published figures (rounded there; exact decimals here).
    let annual = server
        .get_json("/stocks/time-series/AMZN?interval=1&frequency=Annual")
        .await;
    let annual = rows(&annual);
    let expected = [
        (
            "2019-01-01",
            95.455,
            101.79,
            84.253,
            92.392,
            8_154_332_000_i64,
        ),
        (
            "2020-01-01",
            93.75,
            177.6125,
            81.3015,
            162.8465,
            24_950_814_000,
        ),
        (
            "2021-01-01",
            163.5,
            188.654,
            144.05,
            166.717,
            17_076_362_000,
        ),
        ("2022-01-01", 167.55, 171.4, 101.26, 116.46, 10_032_250_600),
    ];
    assert_eq!(annual.len(), 4);
    for (row, (start, open, high, low, close, volume)) in annual.iter().zip(expected) {
        assert_eq!(row["symbol"], "AMZN");
        assert_eq!(row["period_start"], start);
        for (key, want) in [
            ("open", open),
            ("high", high),
            ("low", low),
            ("close", close),
        ] {
            assert_rel(f(&row[key]), want, 1e-3, &format!("{start} {key}"));
        }
        assert_eq!(row["volume"].as_i64(), Some(volume), "{start} volume");
    }
    // Exact decimals kept: the first open and the 2020 open are the CSV's text.
    assert_eq!(annual[0]["open"].to_string(), "95.455002");
    assert_eq!(annual[1]["open"].to_string(), "93.75");
    assert_eq!(annual[0]["high"].to_string(), "101.790001");

    // Every frequency/interval of the pandas fixture, row for row.
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(RESAMPLE_FIXTURE).unwrap()).unwrap();
    for (key, expected) in fixture["series"].as_object().unwrap() {
        let (frequency, interval) = key.split_once('/').unwrap();
        let got = server
            .get_json(&format!(
                "/stocks/time-series/AMZN?frequency={frequency}&interval={interval}"
            ))
            .await;
        let got = rows(&got);
        let expected = rows(expected);
        assert_eq!(got.len(), expected.len(), "{key}: row count");
        for (g, e) in got.iter().zip(expected) {
            assert_eq!(g["period_start"], e[0], "{key}");
            for (i, field) in ["open", "high", "low", "close"].iter().enumerate() {
                assert_rel(
                    f(&g[*field]),
                    f(&e[i + 1]),
                    1e-12,
                    &format!("{key} {field}"),
                );
            }
            assert_eq!(g["volume"].as_i64(), e[5].as_i64(), "{key} volume");
        }
    }

    // Weekly: labelled by Mondays.
    let weekly = server
        .get_json("/stocks/time-series/AMZN?frequency=Weekly")
        .await;
    for row in rows(&weekly) {
        let date =
            chrono::NaiveDate::parse_from_str(row["period_start"].as_str().unwrap(), "%Y-%m-%d")
                .unwrap();
        assert_eq!(
            chrono::Datelike::weekday(&date),
            chrono::Weekday::Mon,
            "{row}"
        );
    }
    assert_eq!(rows(&weekly)[0]["period_start"], "2019-06-24");

    // Multi-interval bins are anchored at the period of the first bar of the range.
    let quarters = server
        .get_json("/stocks/time-series/AMZN?frequency=Monthly&interval=3")
        .await;
    let starts: Vec<&str> = rows(&quarters)
        .iter()
        .take(3)
        .map(|r| r["period_start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2019-06-01", "2019-09-01", "2019-12-01"]);
    let anchored = server
        .get_json("/stocks/time-series/AMZN?frequency=Monthly&interval=3&start=2019-08-15")
        .await;
    let starts: Vec<&str> = rows(&anchored)
        .iter()
        .take(2)
        .map(|r| r["period_start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2019-08-01", "2019-11-01"]);
    let weeks2 = server
        .get_json("/stocks/time-series/AMZN?frequency=Weekly&interval=2&start=2019-07-03")
        .await;
    assert_eq!(rows(&weeks2)[0]["period_start"], "2019-07-01");
    assert_eq!(rows(&weeks2)[1]["period_start"], "2019-07-15");

    // start/end inclusive, as dates or RFC 3339.
    for query in [
        "start=2020-01-02&end=2020-01-03",
        "start=2020-01-02T00:00:00Z&end=2020-01-03T00:00:00Z",
        "start=2020-01-01T22:00:00-02:00&end=2020-01-03",
    ] {
        let window = server
            .get_json(&format!("/stocks/time-series/AMZN?{query}"))
            .await;
        let dates: Vec<&str> = rows(&window)
            .iter()
            .map(|r| r["date"].as_str().unwrap())
            .collect();
        assert_eq!(dates, ["2020-01-02", "2020-01-03"], "{query}");
    }
    let empty = server
        .get_json("/stocks/time-series/AMZN?start=2030-01-01&frequency=Annual")
        .await;
    assert_eq!(
        empty,
        json!([]),
        "a known symbol with an empty range is 200 []"
    );
    drop(server);
    db.drop_db().await;
}

async fn status_and_body(server: &Server, path: &str) -> (u16, Value) {
    let r = server.get(path).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn bad_parameters_and_unknown_names(engine: Engine) {
    let db = database(engine).await;
    let server = server_with_shared_csv(&db).await;
    let cases = [
        // 400: bad parameters.
        ("/stocks/time-series/AMZN?interval=2", 400),
        ("/stocks/time-series/AMZN?frequency=monthly", 400),
        ("/stocks/time-series/AMZN?frequency=Yearly", 400),
        ("/stocks/time-series/AMZN?frequency=Monthly&interval=0", 400),
        (
            "/stocks/time-series/AMZN?frequency=Monthly&interval=-1",
            400,
        ),
        (
            "/stocks/time-series/AMZN?frequency=Monthly&interval=1.5",
            400,
        ),
        (
            "/stocks/time-series/AMZN?frequency=Monthly&interval=abc",
            400,
        ),
        ("/stocks/time-series/AMZN?foo=1", 400),
        (
            "/stocks/time-series/AMZN?frequency=Monthly&frequency=Annual",
            400,
        ),
        ("/stocks/time-series/AMZN?start=yesterday", 400),
        ("/stocks/time-series/AMZN?end=2020-13-01", 400),
        (
            "/stocks/time-series/AMZN?start=2021-01-01&end=2020-01-01",
            400,
        ),
        ("/stocks/indicators/AMZN/sma?window=0", 400),
        ("/stocks/indicators/AMZN/sma?window=x", 400),
        ("/stocks/indicators/AMZN/sma?window=2&window=3", 400),
        ("/stocks/indicators/AMZN/sma?fast=2", 400),
        ("/stocks/indicators/AMZN/macd?fast=26&slow=12", 400),
        ("/stocks/indicators/AMZN/bollinger?k=-1", 400),
        ("/stocks/indicators/AMZN/vwap?window=3", 400),
        ("/stocks/indicators/AMZN/rsi?interval=2", 400),
        (
            "/stocks/indicators/AMZN/rsi?frequency=Weekly&frequency=Annual",
            400,
        ),
        ("/stocks/indicators/AMZN/ema?start=soon", 400),
        // 404: unknown symbol or indicator.
        ("/stocks/time-series/NOPE", 404),
        ("/stocks/time-series/NOPE?frequency=Annual", 404),
        ("/stocks/time-series/amzn", 404),
        ("/stocks/indicators/NOPE/sma", 404),
        ("/stocks/indicators/AMZN/stochastic", 404),
        ("/stocks/indicators/AMZN/SMA", 404),
        ("/api/v1/stocks/time-series/NOPE", 404),
    ];
    for (path, status) in cases {
        let (got, body) = status_and_body(&server, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: JSON body with a message: {body}"
        );
    }
    drop(server);
    db.drop_db().await;
}

/// AMZN's dates in file order: fixture rows name bars by index.
async fn amzn_dates(server: &Server) -> Vec<String> {
    let raw = server.get_json("/stocks/time-series/AMZN").await;
    rows(&raw)
        .iter()
        .map(|r| r["date"].as_str().unwrap().to_string())
        .collect()
}

async fn indicators_match_the_reference_fixtures(engine: Engine) {
    let db = database(engine).await;
    let server = server_with_shared_csv(&db).await;
    let dates = amzn_dates(&server).await;
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(INDICATOR_FIXTURE).unwrap()).unwrap();
    let mut compared = 0;
    for case in rows(&fixture["cases"]) {
        if case["series"] != "AMZN" {
            continue;
        }
        let name = case["indicator"].as_str().unwrap();
        let query: Vec<String> = case["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let path = format!("/stocks/indicators/AMZN/{name}?{}", query.join("&"));
        let got = server.get_json(&path).await;
        let got = rows(&got);
        let expected = rows(&case["rows"]);
        assert_eq!(got.len(), expected.len(), "{path}: row count");
        let fields: &[&str] = match name {
            "macd" => &["macd", "signal", "histogram"],
            "bollinger" => &["upper", "middle", "lower"],
            _ => &["value"],
        };
        for (g, e) in got.iter().zip(expected) {
            let index = e[0].as_u64().unwrap() as usize;
            assert_eq!(g["date"], dates[index].as_str(), "{path}");
            let keys: Vec<&String> = g.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), fields.len() + 1, "{path}: {g}");
            for (i, field) in fields.iter().enumerate() {
                // Values are rounded to 6 decimal places.
                let (a, b) = (f(&g[*field]), f(&e[i + 1]));
                assert!(
                    (a - b).abs() <= 6e-7,
                    "{path} {field} at {index}: {a} vs {b}"
                );
            }
        }
        compared += 1;
    }
    assert!(compared >= 10, "fixture cases compared: {compared}");

    // Shapes, defaults, and the first values spelled out.
    let sma = server
        .get_json("/stocks/indicators/AMZN/sma?window=2")
        .await;
    assert_eq!(
        rows(&sma)[0],
        json!({"date": "2019-07-01", "value": 95.3955})
    );
    let macd = server.get_json("/stocks/indicators/AMZN/macd").await;
    assert_eq!(
        rows(&macd).len(),
        754 - 33,
        "12/26/9 by default, first row at bar 33"
    );
    assert_eq!(rows(&macd)[0]["date"], dates[33].as_str());
    assert_eq!(
        rows(&macd)[0],
        json!({"date": dates[33], "macd": -2.567609, "signal": -2.22387, "histogram": -0.34374})
    );
    let rsi = server.get_json("/stocks/indicators/AMZN/rsi").await;
    assert_eq!(rows(&rsi).len(), 754 - 14, "window 14 by default");
    let bands = server.get_json("/stocks/indicators/AMZN/bollinger").await;
    assert_eq!(
        rows(&bands)[0]["date"],
        dates[19].as_str(),
        "20/2 by default"
    );
    let vwap = server.get_json("/stocks/indicators/AMZN/vwap").await;
    assert_eq!(
        rows(&vwap)[0],
        json!({"date": "2019-06-28", "value": 94.842834})
    );

    // On a resampled series: rows carry `period_start`; windows count periods.
    let monthly = server
        .get_json("/stocks/indicators/AMZN/sma?window=3&frequency=Monthly")
        .await;
    let monthly = rows(&monthly);
    assert_eq!(monthly.len(), 37 - 2);
    assert_eq!(monthly[0]["period_start"], "2019-08-01");
    assert!(monthly[0].get("date").is_none());
    let series = server
        .get_json("/stocks/time-series/AMZN?frequency=Monthly&end=2019-08-31")
        .await;
    let mean = rows(&series).iter().map(|r| f(&r["close"])).sum::<f64>() / 3.0;
    assert!((f(&monthly[0]["value"]) - mean).abs() < 1e-6);
    // Within a range: computed on the bars of the range only.
    let ranged = server
        .get_json("/stocks/indicators/AMZN/ema?window=3&start=2020-01-02&end=2020-01-31")
        .await;
    assert_eq!(
        rows(&ranged)[0]["date"],
        "2020-01-06",
        "third bar of the range"
    );
    drop(server);
    db.drop_db().await;
}

async fn import_reports_bad_rows_by_file_and_line(engine: Engine) {
    let db = database(engine).await;
    let dir = std::env::temp_dir().join(common::unique("bourse-import"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad rows.csv");
    std::fs::write(
        &file,
        "\u{feff}symbol,date,open,high,low,close,volume\r\n\
         BAD,2020-01-01,1,2,0.5,1.5,10\r\n\
         BAD,2020-01-02,1,2,0.5,1.5,10\r\n\
         \r\n\
         BAD,2020-01-03,abc,2,0.5,1.5,10\r\n\
         BAD,2020-01-06,1,2,0.5,1.5,10\r\n\
         BAD,2020-01-07,1,2,3,1.5,10\r\n\
         BAD,2020-01-08,1,2,0.5,1.5,10\r\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();

    // Default: stop at the first bad row, naming file and line; rows before it are kept.
    let out = import(&db.url, &[path]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}:5: bad row: `open` is not a decimal number: \"abc\""
        )),
        "{stderr}"
    );
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(
        text(&out.stdout).starts_with("imported 2 rows, skipped 0"),
        "{}",
        text(&out.stdout)
    );

    let server = Server::start(&ServeSpec::embedded(&db)).await;
    let bars = server.get_json("/stocks/time-series/BAD").await;
    assert_eq!(rows(&bars).len(), 2);

    // Skip: every bad row reported and counted, the rest imported.
    let out = import(&db.url, &["--on-error", "skip", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{path}:5: skipped bad row")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:7: skipped bad row: inconsistent prices")),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).starts_with("imported 4 rows, skipped 2, from 1 file"),
        "{}",
        text(&out.stdout)
    );
    let bars = server
        .eventually("/stocks/time-series/BAD", "four bars", |v| {
            v.as_array().is_some_and(|a| a.len() == 4)
        })
        .await;
    assert_eq!(rows(&bars)[3]["date"], "2020-01-08");

    // A bad header and a missing file are errors too.
    let header = dir.join("header.csv");
    std::fs::write(&header, "symbol,date,open,high,low,close\n").unwrap();
    let out = import(&db.url, &[header.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing column(s) volume"),
        "{}",
        text(&out.stderr)
    );
    let out = import(&db.url, &[dir.join("nope.csv").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nope.csv"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    drop(server);
    db.drop_db().await;
}

async fn live_ticks_roll_up_into_minute_bars(engine: Engine) {
    let db = database(engine).await;
    let spec = ServeSpec::mqtt(&db);
    let server = Server::start(&spec).await;
    let id = uuid::Uuid::new_v4().to_string();
    let name = "Hamada Inc";
    let path = "/stocks/time-series/Hamada%20Inc";

    // Out of order within the minute 14:36, plus one tick of 14:37.
    publish(
        spec.topic(),
        &[
            tick(&id, name, "7.50", "2019-12-15 14:36:30"),
            tick(&id, name, "7.40", "2019-12-15 14:36:10.5"),
            tick(&id, name, "7.70", "2019-12-15 14:36:45"),
            tick(&id, name, "7.45", "2019-12-15 14:37:01"),
        ],
    )
    .await;
    let bars = server
        .eventually(path, "two minute bars", |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 2 && a[0]["volume"] == 3)
        })
        .await;
    assert_eq!(
        bars,
        json!([
            {"symbol": name, "date": "2019-12-15T14:36:00Z", "open": 7.4, "high": 7.7, "low": 7.4, "close": 7.7, "volume": 3},
            {"symbol": name, "date": "2019-12-15T14:37:00Z", "open": 7.45, "high": 7.45, "low": 7.45, "close": 7.45, "volume": 1},
        ])
    );

    // The current minute updates: a late older tick becomes the open, a newer one the close,
    // a redelivered tick (same stock and timestamp) does not count again.
    publish(
        spec.topic(),
        &[
            tick(&id, name, "7.35", "2019-12-15 14:36:05"),
            tick(&id, name, "7.60", "2019-12-15 14:36:50"),
            tick(&id, name, "9.99", "2019-12-15 14:36:30"),
        ],
    )
    .await;
    let bars = server
        .eventually(path, "the 14:36 bar updated", |v| {
            v.as_array().is_some_and(|a| a[0]["volume"] == 5)
        })
        .await;
    assert_eq!(
        bars[0],
        json!({"symbol": name, "date": "2019-12-15T14:36:00Z", "open": 7.35, "high": 7.7, "low": 7.35, "close": 7.6, "volume": 5})
    );

    // Minute bars resample like any other series.
    let hourly = server.get_json(&format!("{path}?frequency=Hourly")).await;
    assert_eq!(
        hourly,
        json!([{"symbol": name, "period_start": "2019-12-15T14:00:00Z", "open": 7.35, "high": 7.7, "low": 7.35, "close": 7.45, "volume": 6}])
    );
    let minutes = server
        .get_json(&format!(
            "{path}?frequency=Minute&interval=2&start=2019-12-15T14:36:00Z"
        ))
        .await;
    assert_eq!(rows(&minutes).len(), 1);
    assert_eq!(minutes[0]["period_start"], "2019-12-15T14:36:00Z");
    assert_eq!(minutes[0]["volume"], 6);
    let vwap = server
        .get_json("/stocks/indicators/Hamada%20Inc/vwap")
        .await;
    assert_eq!(rows(&vwap)[0]["date"], "2019-12-15T14:36:00Z");
    drop(server);
    db.drop_db().await;
}
