//! OHLCV bars: one row of a price time series, daily (from `bourse import`) or per minute (rolled
//! up from live ticks).
//!
//! Prices stay [`Decimal`] here because bars are stored and served as money: `95.455002` read from
//! a CSV file must come back as `95.455002`, not as the nearest binary float. Only the indicators
//! (see [`crate::indicators`]) switch to `f64`, and they say why.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Longest symbol accepted, the same bound as a stock's name in the feed (bars of live ticks are
/// stored under the stock's name).
pub const MAX_SYMBOL_LEN: usize = crate::tick::MAX_NAME_LEN;

/// One OHLCV bar. `time` is the first instant the bar covers: midnight UTC for daily bars, the
/// start of the minute for intraday ones.
///
/// `S` is the symbol's type: a `String`, or `()` for the bars of a series whose symbol the
/// reader already knows ([`SeriesBar`]), which then cost no allocation per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar<S = String> {
    pub symbol: S,
    pub time: DateTime<Utc>,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: i64,
}

/// A bar of a series read by symbol: the symbol is the reader's.
pub type SeriesBar = Bar<()>;

/// Why a bar (or a CSV row meant to become one) was refused. The messages name the field and the
/// offending value; the caller adds where it came from (file and line number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarError {
    /// The CSV header is unusable (missing or duplicated column, empty input).
    #[error("bad header: {0}")]
    Header(String),
    /// The row does not have as many fields as the header announced, typically an unquoted
    /// thousands separator (`1,234.5`) or a truncated line.
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    /// A quoted CSV field is not closed, or text follows its closing quote.
    #[error("malformed quoted field")]
    Quote,
    /// A required field is empty.
    #[error("`{0}` is empty")]
    Empty(&'static str),
    /// A field does not parse as what it must be.
    #[error("`{field}` is not {expected}: {value:?}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
        value: String,
    },
    /// A price or the volume is below zero.
    #[error("`{field}` is negative: {value}")]
    Negative { field: &'static str, value: String },
    /// The symbol is too long or contains control characters.
    #[error("`symbol` is not acceptable: {0}")]
    Symbol(&'static str),
    /// The prices contradict each other (`high` below another price, or `low` above one).
    #[error("inconsistent prices: {0}")]
    Inconsistent(String),
}

impl BarError {
    /// A short, fixed label, e.g. for counting rejected rows by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            BarError::Header(_) => "header",
            BarError::FieldCount { .. } => "field_count",
            BarError::Quote => "quote",
            BarError::Empty(_) => "empty_field",
            BarError::Invalid { .. } => "invalid_field",
            BarError::Negative { .. } => "negative",
            BarError::Symbol(_) => "symbol",
            BarError::Inconsistent(_) => "inconsistent",
        }
    }
}

impl Bar {
    /// Checks the invariants every stored bar satisfies: a non-empty, printable symbol; prices and
    /// volume not negative; `high` the highest and `low` the lowest of the four prices.
    ///
    /// The parser calls this, and so should any other producer (e.g. the minute roll-up of
    /// ticks), so that resampling and indicators can rely on `low <= open, close <= high`.
    pub fn validate(&self) -> Result<(), BarError> {
        let symbol = self.symbol.as_str();
        if symbol.trim().is_empty() {
            return Err(BarError::Empty("symbol"));
        }
        if symbol.chars().count() > MAX_SYMBOL_LEN {
            return Err(BarError::Symbol("too long"));
        }
        if symbol.chars().any(char::is_control) {
            return Err(BarError::Symbol("contains control characters"));
        }
        for (field, value) in self.prices() {
            if value.is_sign_negative() && !value.is_zero() {
                return Err(BarError::Negative {
                    field,
                    value: value.to_string(),
                });
            }
        }
        if self.volume < 0 {
            return Err(BarError::Negative {
                field: "volume",
                value: self.volume.to_string(),
            });
        }
        if self.low > self.high {
            return Err(BarError::Inconsistent(format!(
                "high {} is below low {}",
                self.high, self.low
            )));
        }
        for (field, value) in self.prices() {
            if field != "high" && value > self.high {
                return Err(BarError::Inconsistent(format!(
                    "high {} is below {field} {value}",
                    self.high
                )));
            }
            if field != "low" && value < self.low {
                return Err(BarError::Inconsistent(format!(
                    "low {} is above {field} {value}",
                    self.low
                )));
            }
        }
        Ok(())
    }

    fn prices(&self) -> [(&'static str, Decimal); 4] {
        [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
        ]
    }
}

/// Implements [`Ohlcv`] for a struct with `open`, `high`, `low`, `close` (`Decimal`) and `volume`
/// (`i64`) fields, naming the field that holds its time; each series type keeps its own field names.
#[macro_export]
macro_rules! impl_ohlcv {
    ($ty:ty, $time:ident $(, <$($g:ident),+>)?) => {
        impl $(<$($g),+>)? $crate::bar::Ohlcv for $ty {
            fn time(&self) -> ::chrono::DateTime<::chrono::Utc> {
                self.$time
            }
            fn open(&self) -> ::rust_decimal::Decimal {
                self.open
            }
            fn high(&self) -> ::rust_decimal::Decimal {
                self.high
            }
            fn low(&self) -> ::rust_decimal::Decimal {
                self.low
            }
            fn close(&self) -> ::rust_decimal::Decimal {
                self.close
            }
            fn volume(&self) -> i64 {
                self.volume
            }
        }
    };
}

/// Read access to the OHLCV part of a bar, so that indicators run on raw bars ([`Bar`]) and on
/// resampled ones ([`crate::resample::ResampledBar`]) alike.
pub trait Ohlcv {
    fn time(&self) -> DateTime<Utc>;
    fn open(&self) -> Decimal;
    fn high(&self) -> Decimal;
    fn low(&self) -> Decimal;
    fn close(&self) -> Decimal;
    fn volume(&self) -> i64;
}

crate::impl_ohlcv!(Bar<S>, time, <S>);

/// Whether a series is made of whole days or of intraday bars. It decides how a bar's time is
/// rendered: `YYYY-MM-DD` for daily bars (as the financial-data API answers), RFC 3339 for intraday ones,
/// where the date alone would lose the time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SeriesKind {
    Daily,
    Intraday,
}

impl SeriesKind {
    /// `Daily` when every time is midnight UTC (an empty series counts as daily), else `Intraday`.
    /// Used for raw series, whose bars carry no frequency of their own: imported daily bars are
    /// stored at midnight, minute bars of live ticks almost never all are.
    pub fn of_times<I: IntoIterator<Item = DateTime<Utc>>>(times: I) -> SeriesKind {
        if times.into_iter().all(is_midnight) {
            SeriesKind::Daily
        } else {
            SeriesKind::Intraday
        }
    }

    /// [`SeriesKind::of_times`] over the bars' times.
    pub fn of_bars<B: Ohlcv>(bars: &[B]) -> SeriesKind {
        SeriesKind::of_times(bars.iter().map(Ohlcv::time))
    }

    /// Renders `time` for this kind of series: `2019-06-28` or `2024-01-02T03:04:00Z`.
    pub fn format_time(self, time: DateTime<Utc>) -> String {
        match self {
            SeriesKind::Daily => time.format("%Y-%m-%d").to_string(),
            SeriesKind::Intraday => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

/// True when `time` is exactly midnight UTC.
pub fn is_midnight(time: DateTime<Utc>) -> bool {
    time.num_seconds_from_midnight() == 0 && time.nanosecond() == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn bar(open: &str, high: &str, low: &str, close: &str, volume: i64) -> Bar {
        Bar {
            symbol: "AMZN".into(),
            time: Utc.with_ymd_and_hms(2019, 6, 28, 0, 0, 0).unwrap(),
            open: d(open),
            high: d(high),
            low: d(low),
            close: d(close),
            volume,
        }
    }

    #[test]
    fn accepts_a_consistent_bar() {
        assert_eq!(bar("2", "3", "1", "2.5", 10).validate(), Ok(()));
        assert_eq!(bar("0", "0", "0", "0", 0).validate(), Ok(()));
    }

    #[test]
    fn rejects_inconsistent_prices() {
        let err = bar("2", "3", "1", "3.5", 10).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "inconsistent prices: high 3 is below close 3.5"
        );
        let err = bar("0.5", "3", "1", "2", 10).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "inconsistent prices: low 1 is above open 0.5"
        );
        assert!(bar("2", "3", "4", "2", 1).validate().is_err());
    }

    #[test]
    fn rejects_negatives_and_bad_symbols() {
        assert_eq!(
            bar("-1", "3", "-2", "2", 1).validate(),
            Err(BarError::Negative {
                field: "open",
                value: "-1".into()
            })
        );
        assert_eq!(
            bar("1", "1", "1", "1", -1).validate().unwrap_err().reason(),
            "negative"
        );
        let mut b = bar("1", "1", "1", "1", 1);
        b.symbol = "  ".into();
        assert_eq!(b.validate(), Err(BarError::Empty("symbol")));
        b.symbol = "A\u{7}".into();
        assert_eq!(b.validate().unwrap_err().reason(), "symbol");
        b.symbol = "X".repeat(MAX_SYMBOL_LEN + 1);
        assert_eq!(b.validate(), Err(BarError::Symbol("too long")));
    }

    #[test]
    fn series_kind_follows_the_times() {
        let midnight = Utc.with_ymd_and_hms(2019, 6, 28, 0, 0, 0).unwrap();
        let noon = Utc.with_ymd_and_hms(2019, 6, 28, 12, 30, 0).unwrap();
        assert_eq!(SeriesKind::of_times([midnight]), SeriesKind::Daily);
        assert_eq!(SeriesKind::of_times([]), SeriesKind::Daily);
        assert_eq!(SeriesKind::of_times([midnight, noon]), SeriesKind::Intraday);
        assert_eq!(SeriesKind::Daily.format_time(midnight), "2019-06-28");
        assert_eq!(
            SeriesKind::Intraday.format_time(noon),
            "2019-06-28T12:30:00Z"
        );
    }
}
