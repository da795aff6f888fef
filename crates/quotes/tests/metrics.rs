//! `bourse_quote_requests_total{provider,outcome}` counts every answer: `ok`, `cache_hit` or the
//! error code. Its own test binary, because it installs the global metrics recorder.

mod common;

use bourse_quotes::fake::FakeMode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use std::collections::HashMap;

/// The request counters since the previous snapshot (taking one resets them), by
/// `(provider, outcome)`.
fn counters(snapshotter: &Snapshotter) -> HashMap<(String, String), u64> {
    let mut found = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.kind() != MetricKind::Counter || key.key().name() != "bourse_quote_requests_total" {
            continue;
        }
        let label = |name: &str| {
            key.key()
                .labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        if let DebugValue::Counter(n) = value {
            found.insert((label("provider"), label("outcome")), n);
        }
    }
    found
}

fn get(counters: &HashMap<(String, String), u64>, provider: &str, outcome: &str) -> Option<u64> {
    counters
        .get(&(provider.to_owned(), outcome.to_owned()))
        .copied()
}

#[tokio::test]
async fn requests_are_counted_by_provider_and_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder of this binary");

    let (fake, service) = common::service().await;
    // Present at zero from construction on.
    let at_start = counters(&snapshotter);
    assert_eq!(get(&at_start, "stooq", "ok"), Some(0));
    assert_eq!(get(&at_start, "alphavantage", "cache_hit"), Some(0));

    service.quote("aapl.us").await.unwrap();
    service.quote("aapl.us").await.unwrap();
    service.quote("aapl.us").await.unwrap();
    service.quote("appl.us").await.unwrap_err();
    service.quote("").await.unwrap_err();
    service.daily("ibm").await.unwrap();
    fake.set_mode(FakeMode::Throttled);
    service.daily("msft").await.unwrap_err();

    let after = counters(&snapshotter);
    assert_eq!(get(&after, "stooq", "ok"), Some(1));
    assert_eq!(get(&after, "stooq", "cache_hit"), Some(2));
    assert_eq!(get(&after, "stooq", "not_found"), Some(1));
    assert_eq!(get(&after, "stooq", "bad_request"), Some(1));
    assert_eq!(get(&after, "alphavantage", "ok"), Some(1));
    assert_eq!(get(&after, "alphavantage", "throttled"), Some(1));
}
