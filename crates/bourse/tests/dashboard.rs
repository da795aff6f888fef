//! The dashboard at `GET /`, end to end: the real binary in embedded mode (in-process simulated
//! feed, SQLite) and Debian's headless Chromium driven over the DevTools protocol.
//!
//! Chromium is `$CHROME` or `/usr/bin/chromium`; without it these tests fail, they never skip.

mod cdp;
mod common;

use cdp::{Browser, Page};
use chrono::{DurationRound, TimeDelta, Utc};
use common::{basic, create_user, import, ServeSpec, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// The browser tests run one at a time: each drives a server, a feed and a browser, and the
/// machine has two cores.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The table as the page shows it.
const ROWS: &str = r#"[...document.querySelectorAll('#stocks tbody tr')].map((tr) => ({
    id: tr.dataset.id,
    name: tr.querySelector('.name').textContent,
    price: tr.querySelector('.price').textContent,
    target: tr.querySelector('.target').textContent,
    hit: tr.dataset.targetHit,
    time: tr.querySelector('.time').textContent,
}))"#;

/// Pixels of each palette colour drawn on a canvas (opaque pixels within a small distance of
/// the colour; the canvas is transparent where nothing is drawn).
fn colour_pixels_js(canvas: &str, colours: &[&str]) -> String {
    format!(
        r#"(() => {{
            const canvas = document.getElementById('{canvas}');
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const names = {colours:?};
            const rgb = names.map((n) => {{
                const hex = window.bourseDashboard.palette[n].replace('#', '');
                return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
            }});
            const counts = Object.fromEntries(names.map((n) => [n, 0]));
            for (let p = 0; p < data.length; p += 4) {{
                if (data[p + 3] < 250) continue;
                rgb.forEach(([r, g, b], k) => {{
                    if (Math.abs(data[p] - r) + Math.abs(data[p + 1] - g) + Math.abs(data[p + 2] - b) < 30) {{
                        counts[names[k]] += 1;
                    }}
                }});
            }}
            return counts;
        }})()"#
    )
}

async fn rows(page: &Page<'_>) -> Vec<Value> {
    page.eval(ROWS)
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// A number as the page prints it (`▲ 57.00` → 57).
fn number_in(text: &str) -> Option<f64> {
    text.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// Polls the page until `check` returns something, failing after `secs` seconds with `what`
/// and the last value seen.
async fn until<T>(
    page: &Page<'_>,
    expression: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = page.eval(expression).await;
        if let Some(found) = check(&v) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s; last: {v}; page errors: {:?}",
            page.errors()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Thirty 1-minute bars of CIB, the last one a minute before the current one, written as a CSV
/// and loaded with `bourse import`, so that the chart has an hour-scale history with an
/// indicator on it from the start.
fn import_minute_bars(database_url: &str, dir: &std::path::Path) -> usize {
    let now = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("whole minute");
    let mut csv = String::from("symbol,date,open,high,low,close,volume\n");
    let mut close = 27.0_f64;
    for i in (1..=30).rev() {
        let date = now - TimeDelta::minutes(i);
        let open = close;
        close = 27.0 + (i as f64 / 4.0).sin() * 0.8;
        let (high, low) = (open.max(close) + 0.1, open.min(close) - 0.1);
        csv.push_str(&format!(
            "CIB,{},{open:.2},{high:.2},{low:.2},{close:.2},{}\n",
            date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            40 + i
        ));
    }
    let path = dir.join("cib-minutes.csv");
    std::fs::write(&path, csv).expect("write CSV");
    let out = import(database_url, &[path.to_str().expect("UTF-8 path")]);
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    30
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_is_served_with_types_caching_and_a_strict_policy() {
    let db = common::database(common::Engine::Sqlite).await;
    let server = Server::start(&ServeSpec::embedded(&db)).await;

    let r = server.get("/").await;
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let etag = headers["etag"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<a href="/docs">"#) && html.contains(r#"<a href="/metrics">"#));

    // Unchanged page: 304 for the browser's cached copy.
    let r = server
        .http
        .get(server.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);

    // Every asset the page links is served with its type and cached for good (its URL changes
    // with its content).
    let mut linked = 0;
    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let start = html
            .find(&format!("/dashboard/{file}?v="))
            .unwrap_or_else(|| panic!("{file} linked"));
        let url = &html[start..start + html[start..].find('"').unwrap()];
        let r = server.get(url).await;
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], content_type, "{url}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(!r.bytes().await.unwrap().is_empty());
        linked += 1;
    }
    assert_eq!(linked, 3);
    let r = server.get("/dashboard/secrets.txt").await;
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());
    // The dashboard lives at the root only, not under the API prefix.
    assert_eq!(server.get("/api/v1/").await.status(), 404);
    // The page's links lead somewhere.
    assert_eq!(server.get("/docs").await.status(), 200);
    assert_eq!(server.get("/metrics").await.status(), 200);
    // Requests for the page are counted under their route template.
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"route="/dashboard/{file}""#),
        "asset requests in the metrics"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_live_prices_charts_and_new_targets_in_a_real_browser() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let db = common::database(common::Engine::Sqlite).await;
    let dir = std::env::temp_dir().join(common::unique("bourse-dashboard"));
    std::fs::create_dir_all(&dir).unwrap();
    let imported = import_minute_bars(&db.url, &dir);
    let server = Server::start(&ServeSpec::embedded(&db).env("BOURSE_FEED_RATE", "5")).await;
    create_user(&db.url, "chief", "chief-secret", true);
    let browser = Browser::launch(1400, 900).await;
    let page = browser.open(&server.url("/")).await;

    // The stocks are listed, in the API's order, with the API's ids.
    let listed = until(&page, ROWS, 15, "the three demo stocks listed", |v| {
        let rows = v.as_array()?;
        (rows.len() == 3 && rows.iter().all(|r| number_in(&text(r, "price")).is_some()))
            .then(|| rows.clone())
    })
    .await;
    let api = server.get_json("/stocks").await;
    let names: Vec<String> = listed.iter().map(|r| text(r, "name")).collect();
    assert_eq!(names, ["CIB", "Edita", "Hamada Inc"]);
    for (row, stock) in listed.iter().zip(api.as_array().unwrap()) {
        assert_eq!(row["id"], stock["stock_id"]);
    }
    assert_eq!(
        page.eval("document.getElementById('count').textContent")
            .await,
        "3 stocks"
    );
    let links = page
        .eval("[...document.querySelectorAll('nav a')].map((a) => a.getAttribute('href'))")
        .await;
    assert_eq!(links, json!(["/docs", "/metrics"]));

    // A price changes on screen, to a price the stock really traded at.
    let before: HashMap<String, String> = listed
        .iter()
        .map(|r| (text(r, "id"), text(r, "price")))
        .collect();
    let (moved_id, shown) = until(&page, ROWS, 10, "a displayed price to change", |v| {
        v.as_array()?.iter().find_map(|r| {
            let (id, price) = (text(r, "id"), text(r, "price"));
            (before.get(&id).is_some_and(|p| *p != price)).then_some((id, price))
        })
    })
    .await;
    let shown = number_in(&shown).expect("a number");
    let ticks = server
        .get_json(&format!("/stocks/{moved_id}/ticks?limit=1000"))
        .await;
    assert!(
        ticks
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["price"].as_f64() == Some(shown)),
        "{shown} is one of the stock's ticks"
    );

    // The chart of CIB (clicked like a person would): its ticks as a line, the imported and
    // live 1-minute bars as candles, and the SMA 5 from the indicators API over them.
    let cib = text(&listed[0], "id");
    page.eval(&format!(
        "document.querySelector('tr[data-id=\"{cib}\"]').click()"
    ))
    .await;
    assert_eq!(
        page.eval("document.getElementById('chart-name').textContent")
            .await,
        "CIB"
    );
    let charted = until(
        &page,
        "(() => { const t = document.getElementById('ticks-chart').dataset; \
          const b = document.getElementById('bars-chart').dataset; \
          return { points: +t.points, bars: +b.bars, overlay: +b.overlay }; })()",
        15,
        "the charts drawn",
        |v| {
            let (points, bars, overlay) = (
                v["points"].as_u64()?,
                v["bars"].as_u64()?,
                v["overlay"].as_u64()?,
            );
            (points >= 2 && bars > imported as u64 && overlay > 0).then(|| v.clone())
        },
    )
    .await;
    let (bars, overlay) = (
        charted["bars"].as_u64().unwrap(),
        charted["overlay"].as_u64().unwrap(),
    );
    // SMA 5 has a value from each series' fifth bar on: at least 26 over the 30 imported bars.
    assert!((26..=bars - 4).contains(&overlay), "{charted}");
    let tick_pixels = page.eval(&colour_pixels_js("ticks-chart", &["tick"])).await;
    assert!(
        tick_pixels["tick"].as_u64().unwrap() > 100,
        "tick line drawn: {tick_pixels}"
    );
    let bar_pixels = page
        .eval(&colour_pixels_js("bars-chart", &["up", "down", "overlay"]))
        .await;
    let candles = bar_pixels["up"].as_u64().unwrap() + bar_pixels["down"].as_u64().unwrap();
    assert!(candles > 200, "candles drawn: {bar_pixels}");
    assert!(
        bar_pixels["overlay"].as_u64().unwrap() > 100,
        "indicator drawn: {bar_pixels}"
    );

    // An analysis posted through the API shows up on the page: first a target far above the
    // price (not hit), then a DOWN target above it (hit at once).
    let price = server.get_json(&format!("/stocks/{cib}")).await["price"]
        .as_f64()
        .unwrap();
    let admin = basic("chief", "chief-secret");
    let far = (price * 2.0).round();
    for (kind, hit) in [("UP", "false"), ("DOWN", "true")] {
        let r = server
            .http
            .post(server.url(&format!("/admin/stocks/{cib}/analysis")))
            .header("authorization", &admin)
            .json(&json!({"target": far, "type": kind}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let arrow = if kind == "UP" { '▲' } else { '▼' };
        until(
            &page,
            ROWS,
            5,
            &format!("the {kind} target on the page"),
            |v| {
                let row = v.as_array()?.iter().find(|r| text(r, "id") == cib)?.clone();
                let target = text(&row, "target");
                (target.starts_with(arrow)
                    && number_in(&target) == Some(far)
                    && text(&row, "hit") == hit)
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        page.eval(&format!(
            "document.querySelector('tr[data-id=\"{cib}\"] .badge').textContent"
        ))
        .await,
        "hit"
    );

    // The header summarises the live activity.
    let summary = until(
        &page,
        "[...document.querySelectorAll('.summary span')].map((s) => s.textContent)",
        10,
        "the live summary",
        |v| {
            let texts: Vec<String> = v
                .as_array()?
                .iter()
                .filter_map(|t| Some(t.as_str()?.to_string()))
                .collect();
            let rate: f64 = texts.get(2)?.strip_suffix(" ticks/s")?.parse().ok()?;
            (texts.len() == 4 && rate > 0.0 && texts[3].starts_with("last tick ")).then_some(texts)
        },
    )
    .await;
    assert_eq!(summary[..2], ["live", "3 stocks"]);

    // Nothing went wrong in the page: no console error, exception, failed load or policy block.
    assert_eq!(page.errors(), Vec::<String>::new());

    let png = page.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e.png");
    std::fs::write(&shot, &png).expect("write screenshot");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Everything the page holds that could grow: live DOM elements, DOM nodes and JS heap after a
/// garbage collection, event listeners, and the page's own buffers.
async fn footprint(page: &Page<'_>) -> (Value, HashMap<String, f64>) {
    page.collect_garbage().await;
    let metrics = page.metrics().await;
    let dom = page
        .eval(
            "({ elements: document.getElementsByTagName('*').length, \
                stats: window.bourseDashboard.stats() })",
        )
        .await;
    (dom, metrics)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_stays_bounded_with_100_stocks_at_20_ticks_per_second() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let db = common::database(common::Engine::Sqlite).await;
    let server = Server::start(
        &ServeSpec::embedded(&db)
            .env("BOURSE_FEED_STOCKS", "100")
            .env("BOURSE_FEED_RATE", "20"),
    )
    .await;
    let browser = Browser::launch(1400, 900).await;
    let page = browser.open(&server.url("/")).await;

    until(&page, ROWS, 20, "all 100 stocks listed", |v| {
        (v.as_array()?.len() == 100).then_some(())
    })
    .await;
    // Let the first chart load settle, then measure across ten seconds of 20 ticks/s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first_rows = rows(&page).await;
    let (dom_a, metrics_a) = footprint(&page).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (dom_b, metrics_b) = footprint(&page).await;
    let last_rows = rows(&page).await;

    // Usable: one row per stock, and every row kept up with its ticks (each stock ticks about
    // twice in ten seconds at 20 ticks/s over 100 stocks).
    assert_eq!(last_rows.len(), 100);
    let updated = first_rows
        .iter()
        .zip(&last_rows)
        .filter(|(a, b)| a["id"] == b["id"] && a["time"] != b["time"])
        .count();
    assert_eq!(updated, 100, "every row updated in 10 s");

    // Bounded: the same elements, no more nodes or listeners, the buffers within their caps,
    // and the heap not growing with the ~200 ticks received. After a garbage collection the heap
    // settles near 0.8 MB and moves by tens of KiB while the JIT warms up; a leak of 1 KiB per
    // tick would add 200 KiB.
    assert_eq!(dom_a["elements"], dom_b["elements"], "{dom_a} vs {dom_b}");
    let stats = &dom_b["stats"];
    assert_eq!(stats["rows"], 100);
    assert_eq!(stats["stocks"], 100);
    assert!(stats["dirty"].as_u64().unwrap() <= 100, "{stats}");
    assert!(stats["tickPoints"].as_u64().unwrap() <= stats["tickCapacity"].as_u64().unwrap());
    assert!(stats["bars"].as_u64().unwrap() <= 61, "{stats}");
    let metric = |m: &HashMap<String, f64>, name: &str| {
        *m.get(name)
            .unwrap_or_else(|| panic!("{name} in the page metrics"))
    };
    assert!(
        metric(&metrics_b, "Nodes") <= metric(&metrics_a, "Nodes"),
        "DOM nodes grew: {} -> {}",
        metric(&metrics_a, "Nodes"),
        metric(&metrics_b, "Nodes")
    );
    assert!(
        metric(&metrics_b, "JSEventListeners") <= metric(&metrics_a, "JSEventListeners"),
        "event listeners grew"
    );
    let (heap_a, heap_b) = (
        metric(&metrics_a, "JSHeapUsedSize"),
        metric(&metrics_b, "JSHeapUsedSize"),
    );
    assert!(
        heap_b < heap_a + 128.0 * 1024.0,
        "JS heap grew from {heap_a} to {heap_b} bytes"
    );
    assert_eq!(page.errors(), Vec::<String>::new());
}

/// With the default anonymous quota (100 requests a rolling day), a page left open must not use
/// it up: live prices come over the stream, which is not counted, and the page paces its
/// periodic refreshes (normally every 30 s) by the `RateLimit-*` headers it gets.
#[tokio::test]
async fn dashboard_paces_its_refreshes_to_the_anonymous_quota() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let db = common::database(common::Engine::Sqlite).await;
    let server = Server::start(
        &ServeSpec::embedded(&db)
            .env("BOURSE_FEED_RATE", "5")
            .env("BOURSE_QUOTA_ANON_PER_DAY", "100"),
    )
    .await;
    let browser = Browser::launch(1200, 800).await;
    let page = browser.open(&server.url("/")).await;
    let listed = until(&page, ROWS, 15, "the demo stocks listed", |v| {
        let rows = v.as_array()?;
        (rows.len() == 3).then(|| rows.clone())
    })
    .await;
    // The first stock is selected and its charts load; then the page has nothing left to ask.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let remaining = |r: &reqwest::Response| -> u64 {
        r.headers()["ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = server.get("/stocks").await;
    assert_eq!(first.status(), 200);
    let left = remaining(&first);
    assert!(
        (85..99).contains(&left),
        "the page's start used {}",
        99 - left
    );
    let pacing = page.eval("window.bourseDashboard.pacing()").await;
    // The page saw what was left before the test's own request.
    assert_eq!(pacing["remaining"], left + 1, "{pacing}");
    // At most half of what is left, one request per snapshot refresh, over a day.
    let delay_ms = pacing["snapshotDelayMs"].as_f64().unwrap();
    assert!(
        delay_ms >= 86_400_000.0 / ((left + 1) as f64 / 2.0) * 0.99,
        "{pacing}"
    );

    // Past the normal 30 s period, prices still move on screen and the page asked nothing.
    let before: HashMap<String, String> = listed
        .iter()
        .map(|r| (text(r, "id"), text(r, "price")))
        .collect();
    tokio::time::sleep(Duration::from_secs(33)).await;
    until(&page, ROWS, 10, "a displayed price to change", |v| {
        v.as_array()?
            .iter()
            .any(|r| {
                before
                    .get(&text(r, "id"))
                    .is_some_and(|p| *p != text(r, "price"))
            })
            .then_some(())
    })
    .await;
    let second = server.get("/stocks").await;
    assert_eq!(
        remaining(&second),
        left - 1,
        "only the test's own request counted"
    );
    assert_eq!(page.errors(), Vec::<String>::new());
}
