//! Helpers shared by the integration tests: the daily OHLCV fixture and small synthetic series.

#![allow(dead_code)]

use bourse_domain::bar_csv::parse_csv;
use bourse_domain::Bar;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;

/// Daily AMZN and TSLA bars kept with the fixtures (origin: tests/fixtures/README.md).
pub const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stocks_ohlcv.csv"
);

/// Every bar of the shared file, through the real parser; any bad row fails the test.
pub fn shared_bars() -> Vec<Bar> {
    let text = std::fs::read_to_string(SHARED_CSV)
        .unwrap_or_else(|e| panic!("cannot read {SHARED_CSV}: {e}"));
    parse_csv(&text)
        .map(|(line, bar)| bar.unwrap_or_else(|e| panic!("line {line}: {e}")))
        .collect()
}

pub fn amzn() -> Vec<Bar> {
    shared_bars()
        .into_iter()
        .filter(|b| b.symbol == "AMZN")
        .collect()
}

pub fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

pub fn dec(v: f64) -> Decimal {
    Decimal::from_f64(v).unwrap()
}

/// A bar whose four prices are `close`, on day `i` after 2024-01-01.
pub fn close_bar(i: usize, close: f64) -> Bar {
    Bar {
        symbol: "TEST".into(),
        time: day(2024, 1, 1) + Duration::days(i as i64),
        open: dec(close),
        high: dec(close),
        low: dec(close),
        close: dec(close),
        volume: 1,
    }
}

pub fn close_bars(closes: &[f64]) -> Vec<Bar> {
    closes
        .iter()
        .enumerate()
        .map(|(i, c)| close_bar(i, *c))
        .collect()
}

pub fn bar_at(time: DateTime<Utc>, open: i64, high: i64, low: i64, close: i64, volume: i64) -> Bar {
    Bar {
        symbol: "TEST".into(),
        time,
        open: Decimal::from(open),
        high: Decimal::from(high),
        low: Decimal::from(low),
        close: Decimal::from(close),
        volume,
    }
}

/// `|actual - expected| <= tolerance * max(1, |expected|)`.
pub fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let scale = expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance * scale,
        "{what}: got {actual}, expected {expected}"
    );
}
