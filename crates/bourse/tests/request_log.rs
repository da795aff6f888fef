//! The request log end to end: lines in the exact DRF-style format, who is named, what
//! is not logged, size rotation, and every line on disk after a graceful stop.

mod common;

use bourse_quotes::fake::FakeUpstream;
use chrono::{NaiveDateTime, Utc};
use common::{basic, create_user, database, register, token, Engine, ServeSpec, Server};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

/// Waits until `path` holds `n` lines (the writer works off the request path).
async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = lines(path);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, expected {n}: {found:?}",
            path.display(),
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Splits `[31/Jul/2022 13:56:08] [INFO] [API_REQUEST] GET /x who` into its time and the rest.
fn parse(line: &str) -> (NaiveDateTime, &str) {
    let (stamp, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once("] "))
        .unwrap_or_else(|| panic!("no [time] in {line:?}"));
    let at = NaiveDateTime::parse_from_str(stamp, "%d/%b/%Y %H:%M:%S")
        .unwrap_or_else(|e| panic!("time {stamp:?} in {line:?}: {e}"));
    (at, rest)
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique("bourse-request-log"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn one_line_per_api_request_in_the_seed_format() {
    let upstream = FakeUpstream::start().await.expect("fake AlphaVantage");
    let db = database(Engine::Sqlite).await;
    let dir = log_dir();
    let path = dir.join("apicalls.log");
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_ALPHAVANTAGE_URL", upstream.url())
        .env("BOURSE_REQUEST_LOG", path.display().to_string())
        .env("BOURSE_QUOTA_ANON_PER_DAY", "100");
    let mut server = Server::start(&spec).await;
    create_user(&db.url, "john", "johnpw", false);
    let started = Utc::now().naive_utc();

    // The format's two documented examples, then the other ways of calling.
    let key = register(&server, "user@example.com").await;
    let r = server
        .get_auth("/api/v1/symbol/ibm/?format=json", &token(&key))
        .await;
    assert_eq!(r.status(), 200);
    let r = server
        .post_form(
            "/api/v1/register/",
            &[
                ("name", "A"),
                ("last_name", "B"),
                ("email", "x@example.org"),
            ],
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = server
        .get_auth("/history?limit=5", &basic("john", "johnpw"))
        .await;
    assert_eq!(r.status(), 200);
    let r = server.get_auth("/stocks", &token(&"f".repeat(64))).await;
    assert_eq!(
        r.status(),
        200,
        "a route without auth ignores bad credentials"
    );
    assert_eq!(server.get("/no/such/route").await.status(), 404);
    // Not API requests: not logged.
    for path in ["/_healthcheck", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(server.get(path).await.status(), 200);
    }

    let expected = [
        "[INFO] [API_REQUEST] POST /register AnonymousUser",
        "[INFO] [API_REQUEST] GET /api/v1/symbol/ibm/ user@example.com",
        "[INFO] [API_REQUEST] POST /api/v1/register/ AnonymousUser",
        "[INFO] [API_REQUEST] GET /history john",
        "[INFO] [API_REQUEST] GET /stocks AnonymousUser",
        "[INFO] [API_REQUEST] GET /no/such/route AnonymousUser",
    ];
    let found = wait_for_lines(&path, expected.len()).await;
    let finished = Utc::now().naive_utc();
    let rest: Vec<&str> = found.iter().map(|l| parse(l).1).collect();
    assert_eq!(rest, expected, "{found:#?}");
    for line in &found {
        let (at, _) = parse(line);
        assert!(
            at >= started - chrono::Duration::seconds(1)
                && at <= finished + chrono::Duration::seconds(1),
            "{line}: not the request's time (UTC)"
        );
    }

    // A graceful stop leaves every line on disk, the last request's included.
    let r = server.get("/stocks?include=technical_analysis").await;
    assert_eq!(r.status(), 200);
    assert!(server.terminate().success());
    let all = lines(&path);
    assert_eq!(all.len(), expected.len() + 1);
    assert!(
        all[expected.len()].ends_with("] [INFO] [API_REQUEST] GET /stocks AnonymousUser"),
        "{all:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_is_rotated_by_size() {
    let db = database(Engine::Sqlite).await;
    let dir = log_dir();
    let path = dir.join("apicalls.log");
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_REQUEST_LOG", path.display().to_string())
        .env("BOURSE_REQUEST_LOG_MAX_BYTES", "400")
        .env("BOURSE_REQUEST_LOG_KEEP", "2");
    let mut server = Server::start(&spec).await;
    for i in 0..40 {
        assert_eq!(server.get(&format!("/nothing/{i:02}")).await.status(), 404);
    }
    assert!(server.terminate().success());

    let rotated = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    let files = [rotated(2), rotated(1), path.clone()];
    for file in &files {
        let size = std::fs::metadata(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .len();
        assert!(size > 0 && size <= 400, "{}: {size} bytes", file.display());
    }
    assert!(!rotated(3).exists(), "only two rotated files are kept");
    // Oldest file first, the kept lines are the most recent requests, in order, none missing.
    let kept: Vec<String> = files.iter().flat_map(|f| lines(f)).collect();
    let numbers: Vec<usize> = kept
        .iter()
        .map(|l| {
            let rest = parse(l).1;
            let path = rest
                .strip_prefix("[INFO] [API_REQUEST] GET /nothing/")
                .and_then(|r| r.strip_suffix(" AnonymousUser"))
                .unwrap_or_else(|| panic!("{l}"));
            path.parse().unwrap()
        })
        .collect();
    let first = 40 - numbers.len();
    assert_eq!(numbers, (first..40).collect::<Vec<_>>());
    assert!(first > 0, "older lines were rotated away");
    let _ = std::fs::remove_dir_all(dir);
}
