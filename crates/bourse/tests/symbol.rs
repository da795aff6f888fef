//! `GET /symbol/{symbol}` end to end: the real binary against a local fake
//! AlphaVantage serving the real JSON shapes (the series, "Error Message", "Note",
//! "Information"), in-process and through the quote service as its own process over HTTP.

mod common;

use bourse_quotes::fake::{FakeMode, FakeUpstream};
use common::{database, register, token, Engine, ServeSpec, Server};
use serde_json::Value;

/// The DRF-style API's IBM answer, byte for byte, with the exact variation (the original printed
/// `1.5699999999999932`).
const IBM: &str = r#"{"last_refreshed":"2022-07-29","close_value":"130.7900","open_value":"129.5200","high_value":"131.0000","low_value":"129.3100","variation_between_last_two_days":1.57}"#;

async fn message(r: reqwest::Response) -> String {
    let body: Value = r.json().await.expect("JSON error body");
    body["message"].as_str().expect("message").to_string()
}

/// The DRF-style IBM request (trailing slash included) gives exactly its shape; the
/// upstream's "Error Message" is a 404 and its "Note" (its own quota) a 503, both with the
/// upstream text.
async fn ibm_unknown_and_throttled(server: &Server, upstream: &FakeUpstream, auth: &str) {
    let r = server.get_auth("/api/v1/symbol/ibm/", auth).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), IBM);
    let r = server.get_auth("/symbol/nope", auth).await;
    assert_eq!(r.status(), 404);
    assert!(message(r).await.starts_with("Invalid API call."));
    upstream.set_mode(FakeMode::Throttled);
    let r = server.get_auth("/symbol/msft", auth).await;
    assert_eq!(r.status(), 503);
    let text = message(r).await;
    assert!(
        text.starts_with("Thank you for using Alpha Vantage!"),
        "{text}"
    );
    assert!(
        text.contains("5 calls per minute"),
        "the Note's own text: {text}"
    );
    upstream.set_mode(FakeMode::Normal);
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_summary_from_alphavantage() {
    let upstream = FakeUpstream::start().await.expect("fake AlphaVantage");
    let db = database(Engine::Sqlite).await;
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_ALPHAVANTAGE_URL", upstream.url())
        .env("BOURSE_ALPHAVANTAGE_KEY", "test-key");
    let server = Server::start(&spec).await;
    let auth = token(&register(&server, "user@example.com").await);

    ibm_unknown_and_throttled(&server, &upstream, &auth).await;
    let r = server.get_auth("/symbol/IBM", &auth).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["variation_between_last_two_days"].to_string(), "1.57");
    assert_eq!(
        upstream.alphavantage_hits(),
        3,
        "IBM once (the second answer came from the quote service's cache), nope, msft"
    );

    // The newer "Information" wording of the upstream quota: 503 with its text too.
    upstream.set_mode(FakeMode::ThrottledInformation);
    let r = server.get_auth("/symbol/aapl", &auth).await;
    assert_eq!(r.status(), 503);
    assert!(message(r).await.contains("25 requests per day"));
    // Other upstream trouble: 502.
    upstream.set_mode(FakeMode::ServerError);
    assert_eq!(server.get_auth("/symbol/tsla", &auth).await.status(), 502);
    upstream.set_mode(FakeMode::Garbage);
    assert_eq!(server.get_auth("/symbol/tsla", &auth).await.status(), 502);
    upstream.set_mode(FakeMode::Normal);

    // Malformed symbols never reach upstream; no credentials, no summary.
    let hits = upstream.alphavantage_hits();
    assert_eq!(server.get_auth("/symbol/a%20b", &auth).await.status(), 400);
    assert_eq!(server.get_auth("/symbol/a&b", &auth).await.status(), 400);
    assert_eq!(upstream.alphavantage_hits(), hits);
    let r = server.get("/symbol/ibm").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

/// The quote service as its own process, reached over HTTP: the summary and the upstream's
/// errors travel unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn daily_summary_through_the_quote_service() {
    let upstream = FakeUpstream::start().await.expect("fake AlphaVantage");
    let db = database(Engine::Postgres).await;
    let quote_service = Server::start_role(
        "quote-service",
        &[("BOURSE_ALPHAVANTAGE_URL".into(), upstream.url())],
    )
    .await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_QUOTE_SERVICE_URL", quote_service.base.clone());
    let server = Server::start(&spec).await;
    let auth = token(&register(&server, "user@example.com").await);

    ibm_unknown_and_throttled(&server, &upstream, &auth).await;
    assert_eq!(upstream.alphavantage_hits(), 3);
    db.drop_db().await;
}
