//! The quote service over HTTP: the routes the quote-service role mounts, and the client the API
//! uses, both over real sockets.

mod common;

use bourse_quotes::fake::FakeMode;
use bourse_quotes::http::{router, HttpQuoteClient};
use bourse_quotes::{QuoteClient, QuoteError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn quote_service() -> (bourse_quotes::fake::FakeServer, String) {
    let (fake, service) = common::service().await;
    let url = common::serve(router(Arc::new(service))).await;
    (fake, url)
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn routes_answer_the_envelope_with_mapped_statuses() {
    let (fake, url) = quote_service().await;
    let (status, body) = get(&format!("{url}/internal/quote?symbol=aapl.us")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"data": {"symbol": "AAPL.US", "name": "APPLE", "date": "2023-11-27",
            "time": "22:00:13", "open": 189.92, "high": 190.67, "low": 188.9, "close": 189.79,
            "volume": 30984740}})
    );
    let (status, body) = get(&format!("{url}/internal/daily?symbol=ibm")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["variation_between_last_two_days"].to_string(),
        "1.57"
    );
    assert_eq!(body["data"]["close_value"], "130.7900");

    let (status, body) = get(&format!("{url}/internal/quote?symbol=appl.us")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": {"code": "not_found", "message": "Unknown symbol: APPL.US"}})
    );
    let (status, body) = get(&format!("{url}/internal/daily?symbol=nope")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    fake.set_mode(FakeMode::Throttled);
    let (status, body) = get(&format!("{url}/internal/quote?symbol=msft.us")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("throttled"))
    );
    fake.set_mode(FakeMode::ServerError);
    let (status, body) = get(&format!("{url}/internal/daily?symbol=msft")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("bad_upstream"))
    );
}

#[tokio::test]
async fn bad_queries_are_400_without_upstream_calls() {
    let (fake, url) = quote_service().await;
    for query in [
        "",
        "?symbol=",
        "?symbol=a%20b",
        "?q=aapl.us",
        "?symbol=aapl.us&x=1",
    ] {
        let (status, body) = get(&format!("{url}/internal/quote{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
        assert!(body["error"]["message"].is_string());
    }
    assert_eq!(fake.stooq_hits(), 0);
}

#[tokio::test]
async fn the_http_client_round_trips_data_and_errors() {
    let (fake, url) = quote_service().await;
    let client = HttpQuoteClient::new(&url, Duration::from_secs(5)).unwrap();
    let q = client.quote("aapl.us").await.unwrap();
    assert_eq!((q.symbol.as_str(), q.name.as_str()), ("AAPL.US", "APPLE"));
    assert_eq!(q.close.to_string(), "189.79");
    assert_eq!(client.quote("t.us").await.unwrap().name, "AT&T");
    let s = client.daily("IBM").await.unwrap();
    assert_eq!(s.variation_between_last_two_days.to_string(), "1.57");
    assert_eq!(
        client.quote("appl.us").await.unwrap_err(),
        QuoteError::NotFound("Unknown symbol: APPL.US".into())
    );
    fake.set_mode(FakeMode::Throttled);
    let err = client.daily("ibm").await;
    // Cached: the throttled upstream is not asked again.
    assert!(err.is_ok());
    let err = client.daily("aapl").await.unwrap_err();
    assert_eq!(err.code(), "throttled");
    assert!(err
        .message()
        .starts_with("Thank you for using Alpha Vantage!"));
    fake.set_mode(FakeMode::Garbage);
    assert_eq!(
        client.quote("msft.us").await.unwrap_err().code(),
        "bad_upstream"
    );
    assert_eq!(client.quote("a b").await.unwrap_err().code(), "bad_request");
}

#[tokio::test]
async fn the_http_client_maps_transport_failures() {
    let port = common::closed_port().await;
    let client =
        HttpQuoteClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5)).unwrap();
    assert_eq!(
        client.quote("aapl.us").await.unwrap_err().code(),
        "unavailable"
    );

    // A quote service that never answers.
    let hang = axum::Router::new().route(
        "/internal/quote",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let url = common::serve(hang).await;
    let client = HttpQuoteClient::new(&url, Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    assert_eq!(client.quote("aapl.us").await.unwrap_err().code(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Something that is not a quote service.
    let url = common::serve(axum::Router::new()).await;
    let client = HttpQuoteClient::new(&url, Duration::from_secs(5)).unwrap();
    assert_eq!(
        client.quote("aapl.us").await.unwrap_err().code(),
        "bad_upstream"
    );
}
