//! The service over real HTTP against the fake upstream: answer shapes, error mapping, timeouts,
//! and what the cache and single flight spare the upstream.

mod common;

use bourse_quotes::fake::FakeMode;
use bourse_quotes::{QuoteConfig, QuoteError, QuoteService};
use common::{config_for, service};
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[tokio::test]
async fn stooq_quote_has_the_upstream_values() {
    let (fake, service) = service().await;
    let q = service.quote("aapl.us").await.unwrap();
    assert_eq!(q.symbol, "AAPL.US");
    assert_eq!(q.name, "APPLE");
    assert_eq!(
        (q.date.as_str(), q.time.as_str()),
        ("2023-11-27", "22:00:13")
    );
    assert_eq!(
        (q.open, q.high, q.low, q.close),
        (dec("189.92"), dec("190.67"), dec("188.9"), dec("189.79"))
    );
    assert_eq!(q.volume, Some(30984740));
    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(json["close"].to_string(), "189.79");
    assert_eq!(fake.stooq_hits(), 1);
}

#[tokio::test]
async fn names_with_ampersand_and_any_case_symbols() {
    let (_fake, service) = service().await;
    assert_eq!(service.quote(" T.US ").await.unwrap().name, "AT&T");
    assert_eq!(service.quote("MSFT.us").await.unwrap().symbol, "MSFT.US");
}

#[tokio::test]
async fn unknown_stooq_symbol_is_not_found() {
    let (_fake, service) = service().await;
    let err = service.quote("appl.us").await.unwrap_err();
    assert_eq!(err, QuoteError::NotFound("Unknown symbol: APPL.US".into()));
    assert_eq!(err.http_status(), 404);
    let err = service.quote("zzzz.us").await.unwrap_err();
    assert_eq!(err, QuoteError::NotFound("Unknown symbol: ZZZZ.US".into()));
}

#[tokio::test]
async fn stooq_daily_limit_is_throttled_with_its_text() {
    let (fake, service) = service().await;
    fake.set_mode(FakeMode::Throttled);
    let err = service.quote("aapl.us").await.unwrap_err();
    assert_eq!(
        err,
        QuoteError::Throttled("Exceeded the daily hits limit".into())
    );
    assert_eq!(err.http_status(), 503);
}

#[tokio::test]
async fn weird_symbols_are_rejected_before_any_upstream_call() {
    let (fake, service) = service().await;
    for symbol in [
        "",
        "  ",
        "aapl.us&f=x",
        "a b",
        "../etc",
        "x".repeat(40).as_str(),
    ] {
        let err = service.quote(symbol).await.unwrap_err();
        assert_eq!(err.code(), "bad_request", "{symbol:?}");
        assert_eq!(err.http_status(), 400);
        assert_eq!(
            service.daily(symbol).await.unwrap_err().code(),
            "bad_request"
        );
    }
    assert_eq!(fake.stooq_hits() + fake.alphavantage_hits(), 0);
}

#[tokio::test]
async fn alphavantage_ibm_variation_is_exactly_1_57() {
    let (fake, service) = service().await;
    let s = service.daily("ibm").await.unwrap();
    assert_eq!(s.symbol, "IBM");
    assert_eq!(s.last_refreshed, "2022-07-29");
    assert_eq!(s.open_value, "129.5200");
    assert_eq!(s.high_value, "131.0000");
    assert_eq!(s.low_value, "129.3100");
    assert_eq!(s.close_value, "130.7900");
    assert_eq!(s.variation_between_last_two_days, dec("1.57"));
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        json.contains(r#""variation_between_last_two_days":1.57}"#),
        "{json}"
    );
    assert_eq!(fake.alphavantage_hits(), 1);
}

#[tokio::test]
async fn alphavantage_errors_keep_the_upstream_text() {
    let (fake, service) = service().await;
    let err = service.daily("nope").await.unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert!(err.message().starts_with("Invalid API call."), "{err:?}");

    fake.set_mode(FakeMode::Throttled);
    let err = service.daily("ibm").await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("throttled", 503));
    assert!(err.message().contains("5 calls per minute"), "{err:?}");

    fake.set_mode(FakeMode::ThrottledInformation);
    let err = service.daily("ibm").await.unwrap_err();
    assert_eq!(err.code(), "throttled");
    assert!(err.message().contains("25 requests per day"), "{err:?}");
}

#[tokio::test]
async fn server_errors_and_garbage_are_bad_upstream() {
    let (fake, service) = service().await;
    for mode in [FakeMode::ServerError, FakeMode::Garbage] {
        fake.set_mode(mode);
        let err = service.quote("aapl.us").await.unwrap_err();
        assert_eq!(
            (err.code(), err.http_status()),
            ("bad_upstream", 502),
            "{mode:?}"
        );
        let err = service.daily("ibm").await.unwrap_err();
        assert_eq!(err.code(), "bad_upstream", "{mode:?}");
        // No internals in the message.
        assert!(!err.message().contains("html"), "{err:?}");
    }
}

#[tokio::test]
async fn a_slow_upstream_is_a_timeout_within_the_configured_bound() {
    let (fake, service) = service().await;
    fake.set_mode(FakeMode::Slow(Duration::from_secs(5)));
    let started = Instant::now();
    let err = service.quote("aapl.us").await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("timeout", 504));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(service.daily("ibm").await.unwrap_err().code(), "timeout");
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    let port = common::closed_port().await;
    let config = QuoteConfig {
        stooq_url: format!("http://127.0.0.1:{port}"),
        alphavantage_url: format!("http://127.0.0.1:{port}"),
        ..QuoteConfig::default()
    };
    let service = QuoteService::new(&config).unwrap();
    let err = service.quote("aapl.us").await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("unavailable", 503));
    assert_eq!(
        service.daily("ibm").await.unwrap_err().code(),
        "unavailable"
    );
}

#[tokio::test]
async fn successful_answers_are_cached_per_symbol() {
    let (fake, service) = service().await;
    for _ in 0..5 {
        service.quote("aapl.us").await.unwrap();
        service.quote("AAPL.US").await.unwrap();
        service.daily("ibm").await.unwrap();
    }
    assert_eq!(fake.stooq_hits(), 1);
    assert_eq!(fake.alphavantage_hits(), 1);
    service.quote("msft.us").await.unwrap();
    assert_eq!(fake.stooq_hits(), 2);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let (fake, service) = service().await;
    fake.set_mode(FakeMode::ServerError);
    assert!(service.quote("aapl.us").await.is_err());
    assert!(service.quote("appl.us").await.is_err());
    fake.set_mode(FakeMode::Normal);
    assert!(service.quote("appl.us").await.is_err());
    assert!(service.quote("aapl.us").await.is_ok());
    assert_eq!(fake.stooq_hits(), 4);
}

#[tokio::test]
async fn cache_entries_expire_and_zero_disables_the_cache() {
    let fake = bourse_quotes::fake::FakeUpstream::start().await.unwrap();
    let mut config = config_for(&fake);
    config.cache_ttl = Duration::from_millis(300);
    let service = QuoteService::new(&config).unwrap();
    service.quote("aapl.us").await.unwrap();
    service.quote("aapl.us").await.unwrap();
    assert_eq!(fake.stooq_hits(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    service.quote("aapl.us").await.unwrap();
    assert_eq!(fake.stooq_hits(), 2);

    config.cache_ttl = Duration::ZERO;
    let uncached = QuoteService::new(&config).unwrap();
    uncached.quote("aapl.us").await.unwrap();
    uncached.quote("aapl.us").await.unwrap();
    assert_eq!(fake.stooq_hits(), 4);
}

#[tokio::test]
async fn concurrent_cold_requests_make_one_upstream_call() {
    let (fake, service) = service().await;
    fake.set_mode(FakeMode::Slow(Duration::from_millis(300)));
    let service = Arc::new(service);
    let calls: Vec<_> = (0..25)
        .map(|i| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let symbol = if i % 2 == 0 { "aapl.us" } else { "AAPL.US" };
                service.quote(symbol).await
            })
        })
        .collect();
    let daily: Vec<_> = (0..25)
        .map(|_| {
            let service = Arc::clone(&service);
            tokio::spawn(async move { service.daily("ibm").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().close, dec("189.79"));
    }
    for call in daily {
        assert_eq!(call.await.unwrap().unwrap().close_value, "130.7900");
    }
    assert_eq!(fake.stooq_hits(), 1);
    assert_eq!(fake.alphavantage_hits(), 1);
}

#[tokio::test]
async fn concurrent_cold_requests_share_a_failure_too() {
    let (fake, service) = service().await;
    fake.set_mode(FakeMode::Slow(Duration::from_secs(3)));
    let service = Arc::new(service);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let service = Arc::clone(&service);
            tokio::spawn(async move { service.quote("aapl.us").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap_err().code(), "timeout");
    }
    assert_eq!(fake.stooq_hits(), 1);
}
