//! Resampling of bars into coarser periods (`Weekly`, `Monthly`, every 2 `Hourly`, ...).
//!
//! Rules, as the API promises them:
//! - open is the first bar's open, high the highest high, low the lowest low, close the last
//!   bar's close, volume the sum;
//! - periods without any bar are omitted (no empty or NaN rows);
//! - a period is labelled by its first instant (`period_start`): the minute, the top of the hour,
//!   midnight, the Monday of the week (ISO weeks), the 1st of the month, the 1st of January /
//!   April / July / October, January 1st; all in UTC;
//! - with `interval = n > 1`, bins of `n` consecutive periods are anchored at the period that
//!   contains the first bar, and a bin is labelled by its first period, whether or not that period
//!   holds a bar.
//!
//! [`resample`] is one pass over bars sorted by time, with no allocation per bar: each bin's end
//! is computed once when the bin opens, and every following bar costs one comparison until a bar
//! falls past it. Calendar arithmetic happens only per output row.

use crate::bar::{Ohlcv, SeriesKind};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

/// The period length of a resampled series. Parsed from, and displayed as, exactly these names
/// (the financial-data API's spelling); anything else is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Frequency {
    Minute,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Annual,
}

impl Frequency {
    /// All frequencies, finest first.
    pub const ALL: [Frequency; 7] = [
        Frequency::Minute,
        Frequency::Hourly,
        Frequency::Daily,
        Frequency::Weekly,
        Frequency::Monthly,
        Frequency::Quarterly,
        Frequency::Annual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Minute => "Minute",
            Frequency::Hourly => "Hourly",
            Frequency::Daily => "Daily",
            Frequency::Weekly => "Weekly",
            Frequency::Monthly => "Monthly",
            Frequency::Quarterly => "Quarterly",
            Frequency::Annual => "Annual",
        }
    }

    /// How a series resampled at this frequency renders its `period_start`: a date from `Daily`
    /// up, a timestamp below.
    pub fn series_kind(self) -> SeriesKind {
        match self {
            Frequency::Minute | Frequency::Hourly => SeriesKind::Intraday,
            _ => SeriesKind::Daily,
        }
    }

    /// Index of the period containing `time`, counted from an arbitrary fixed origin; consecutive
    /// periods have consecutive indexes, which is what makes `interval` bins simple arithmetic.
    fn period_index(self, time: DateTime<Utc>) -> i64 {
        // `timestamp()` is the floor of the time in seconds (sub-second parts are non-negative),
        // so `div_euclid` floors correctly before 1970 as well.
        let seconds = time.timestamp();
        match self {
            Frequency::Minute => seconds.div_euclid(60),
            Frequency::Hourly => seconds.div_euclid(3_600),
            Frequency::Daily => seconds.div_euclid(86_400),
            // 1970-01-01 was a Thursday: the Monday of its week is day -3.
            Frequency::Weekly => (seconds.div_euclid(86_400) + 3).div_euclid(7),
            Frequency::Monthly => i64::from(time.year()) * 12 + i64::from(time.month0()),
            Frequency::Quarterly => i64::from(time.year()) * 4 + i64::from(time.month0() / 3),
            Frequency::Annual => i64::from(time.year()),
        }
    }

    /// First instant of the period with this index; `None` only outside chrono's range.
    fn period_start(self, index: i64) -> Option<DateTime<Utc>> {
        let from_seconds = |s: i64| DateTime::<Utc>::from_timestamp(s, 0);
        let first_of_month = |year: i64, month0: i64| {
            let year = i32::try_from(year).ok()?;
            let month = u32::try_from(month0 + 1).ok()?;
            NaiveDate::from_ymd_opt(year, month, 1)?
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
        };
        match self {
            Frequency::Minute => from_seconds(index.checked_mul(60)?),
            Frequency::Hourly => from_seconds(index.checked_mul(3_600)?),
            Frequency::Daily => from_seconds(index.checked_mul(86_400)?),
            Frequency::Weekly => {
                from_seconds(index.checked_mul(7)?.checked_sub(3)?.checked_mul(86_400)?)
            }
            Frequency::Monthly => first_of_month(index.div_euclid(12), index.rem_euclid(12)),
            Frequency::Quarterly => first_of_month(index.div_euclid(4), index.rem_euclid(4) * 3),
            Frequency::Annual => first_of_month(index, 0),
        }
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Frequency {
    type Err = ResampleError;

    /// Exact, case-sensitive names only, so that `frequency=monthly` is a 400 rather than a guess.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Frequency::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| ResampleError::UnknownFrequency(s.chars().take(40).collect()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    #[error(
        "unknown frequency {0:?}; expected one of Minute, Hourly, Daily, Weekly, Monthly, Quarterly, Annual"
    )]
    UnknownFrequency(String),
    #[error("interval must be an integer of at least 1")]
    InvalidInterval,
}

/// A resampling request: bins of `interval` consecutive periods of `frequency`. The interval is
/// a [`NonZeroU32`] so that a zero interval cannot be constructed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resample {
    pub frequency: Frequency,
    pub interval: NonZeroU32,
}

impl Resample {
    /// Checks `interval >= 1`.
    pub fn new(frequency: Frequency, interval: u32) -> Result<Resample, ResampleError> {
        let interval = NonZeroU32::new(interval).ok_or(ResampleError::InvalidInterval)?;
        Ok(Resample {
            frequency,
            interval,
        })
    }

    /// One period per bin (`interval = 1`, the API's default when only `frequency` is given).
    pub fn every(frequency: Frequency) -> Resample {
        Resample {
            frequency,
            interval: NonZeroU32::MIN,
        }
    }

    /// Parses the API's query values: `frequency` by exact name, `interval` as a decimal integer
    /// of at least 1 (default 1).
    pub fn parse(frequency: &str, interval: Option<&str>) -> Result<Resample, ResampleError> {
        let frequency = Frequency::from_str(frequency)?;
        match interval {
            None => Ok(Resample::every(frequency)),
            Some(text) => {
                let n = text
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| ResampleError::InvalidInterval)?;
                Resample::new(frequency, n)
            }
        }
    }
}

impl Resample {
    /// `bins` consecutive bins of the series anchored at `anchor`'s period, starting with the bin
    /// that holds `time`: what one page of a resampled series covers. `None` beyond chrono's
    /// range; the window's `end` is `None` when it is unbounded above.
    pub fn window(self, anchor: DateTime<Utc>, time: DateTime<Utc>, bins: u32) -> Option<Bin> {
        let frequency = self.frequency;
        let interval = i64::from(self.interval.get());
        let anchor = frequency.period_index(anchor);
        let first =
            anchor + (frequency.period_index(time) - anchor).div_euclid(interval) * interval;
        let start = frequency.period_start(first)?;
        let end = interval
            .checked_mul(i64::from(bins))
            .and_then(|n| first.checked_add(n))
            .and_then(|i| frequency.period_start(i));
        Some(Bin { start, end })
    }
}

/// One row of a resampled series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResampledBar {
    /// First instant of the bin's first period (see the module documentation).
    pub period_start: DateTime<Utc>,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    /// Sum of the volumes; saturates at `i64::MAX` instead of overflowing.
    pub volume: i64,
}

crate::impl_ohlcv!(ResampledBar, period_start);

/// A bar already aggregated elsewhere (by the database) as one row of a resampled series.
impl From<crate::SeriesBar> for ResampledBar {
    fn from(b: crate::SeriesBar) -> Self {
        ResampledBar {
            period_start: b.time,
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
        }
    }
}

/// Aggregates `bars`, which must be sorted by time (as the store returns them) and belong to one
/// symbol, into bins of `spec.interval` periods of `spec.frequency`. See the module documentation
/// for the rules. O(n), one pass; never panics.
///
/// Out-of-order input is not detected as an error (that would cost a check the sorted case does
/// not need): a bar earlier than its predecessor's bin simply opens a new row.
pub fn resample<B: Ohlcv>(bars: &[B], spec: Resample) -> Vec<ResampledBar> {
    match bars.first() {
        Some(first) => resample_anchored(bars, spec, first.time()),
        None => Vec::new(),
    }
}

/// [`resample`] with the bins anchored at the period holding `anchor` rather than the first
/// bar's: a page of a resampled series starts at a bin boundary of the whole range's bins
/// ([`Resample::window`]), which its own first bar need not be.
pub fn resample_anchored<B: Ohlcv>(
    bars: &[B],
    spec: Resample,
    anchor: DateTime<Utc>,
) -> Vec<ResampledBar> {
    if bars.is_empty() {
        return Vec::new();
    }
    let frequency = spec.frequency;
    let interval = i64::from(spec.interval.get());
    let anchor = frequency.period_index(anchor);

    // Upper bound on the number of rows when the input is sorted; avoids regrowing the output.
    let last = bars
        .last()
        .map_or(anchor, |b| frequency.period_index(b.time()));
    let bins = (last - anchor).div_euclid(interval).saturating_add(1);
    let capacity = usize::try_from(bins).unwrap_or(0).min(bars.len());
    let mut out = Vec::with_capacity(capacity);

    // The bin being filled, and the instants where it starts and ends (end exclusive; `None` when
    // beyond chrono's range, i.e. unbounded).
    let mut current: Option<(ResampledBar, DateTime<Utc>, Option<DateTime<Utc>>)> = None;
    for bar in bars {
        let time = bar.time();
        if let Some((row, start, end)) = current.as_mut() {
            if time >= *start && end.is_none_or(|end| time < end) {
                if bar.high() > row.high {
                    row.high = bar.high();
                }
                if bar.low() < row.low {
                    row.low = bar.low();
                }
                row.close = bar.close();
                row.volume = row.volume.saturating_add(bar.volume());
                continue;
            }
        }
        if let Some((row, _, _)) = current.take() {
            out.push(row);
        }
        let index = frequency.period_index(time);
        let bin_index = anchor + (index - anchor).div_euclid(interval) * interval;
        // The bin's first period lies between the first bar's period and this bar's period, so
        // it is always representable; falling back to the bar's own time is only a formality.
        let start = frequency.period_start(bin_index).unwrap_or(time);
        let end = bin_index
            .checked_add(interval)
            .and_then(|i| frequency.period_start(i));
        let row = ResampledBar {
            period_start: start,
            open: bar.open(),
            high: bar.high(),
            low: bar.low(),
            close: bar.close(),
            volume: bar.volume(),
        };
        current = Some((row, start, end));
    }
    if let Some((row, _, _)) = current {
        out.push(row);
    }
    out
}

/// One bin of a resampled series: its first instant and the first instant after it (`None` when
/// that is beyond chrono's range, i.e. the bin is unbounded above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// The bins [`resample`] puts bars into when the first bar of the range is at `first` and the
/// last at `last`: anchored at `first`'s period, in order, empty ones included (a bin of no bar
/// yields no row). `None` when there are more than `limit`, so that a caller can pick another
/// way without the list ever being built.
pub fn bins(
    spec: Resample,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    limit: usize,
) -> Option<Vec<Bin>> {
    let frequency = spec.frequency;
    let interval = i64::from(spec.interval.get());
    let anchor = frequency.period_index(first);
    let periods = frequency.period_index(last).checked_sub(anchor)?;
    if periods < 0 {
        return Some(Vec::new());
    }
    let count = periods.div_euclid(interval).checked_add(1)?;
    if usize::try_from(count).ok()? > limit {
        return None;
    }
    let out = (0..count)
        .filter_map(|k| {
            let index = anchor.checked_add(k.checked_mul(interval)?)?;
            // Every bin starts between `first`'s and `last`'s periods, so it is representable.
            let start = frequency.period_start(index)?;
            let end = index
                .checked_add(interval)
                .and_then(|i| frequency.period_start(i));
            Some(Bin { start, end })
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn frequency_names_are_exact() {
        for f in Frequency::ALL {
            assert_eq!(Frequency::from_str(f.as_str()), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert!(Frequency::from_str("monthly").is_err());
        assert!(Frequency::from_str("Month").is_err());
        assert!(Frequency::from_str("").is_err());
    }

    #[test]
    fn resample_spec_parsing() {
        assert_eq!(
            Resample::parse("Weekly", None),
            Ok(Resample::every(Frequency::Weekly))
        );
        assert_eq!(
            Resample::parse("Monthly", Some("3")),
            Resample::new(Frequency::Monthly, 3)
        );
        assert_eq!(
            Resample::parse("Monthly", Some("0")),
            Err(ResampleError::InvalidInterval)
        );
        assert_eq!(
            Resample::parse("Monthly", Some("-1")),
            Err(ResampleError::InvalidInterval)
        );
        assert_eq!(
            Resample::parse("Monthly", Some("1.5")),
            Err(ResampleError::InvalidInterval)
        );
        assert!(matches!(
            Resample::parse("Yearly", Some("1")),
            Err(ResampleError::UnknownFrequency(_))
        ));
    }

    #[test]
    fn pages_of_windows_resample_like_the_whole() {
        use chrono::Timelike;
        // Bars every 5 hours for a year, with a hole of two months.
        let bars: Vec<crate::Bar> = (0..1_750)
            .map(|i| t(2020, 1, 1, 0, 0) + chrono::TimeDelta::hours(5 * i))
            .filter(|time| !(time.month() == 5 || time.month() == 6))
            .map(|time| crate::Bar {
                symbol: "X".into(),
                time,
                open: Decimal::from(time.hour()),
                high: Decimal::from(time.day()),
                low: Decimal::ONE,
                close: Decimal::from(time.month()),
                volume: 1,
            })
            .collect();
        for frequency in Frequency::ALL {
            for interval in [1, 3, 7] {
                let spec = Resample::new(frequency, interval).unwrap();
                let whole = resample(&bars, spec);
                let anchor = bars[0].time;
                // Pages of 4 bins, each from the bin of the first bar after the last page.
                let mut paged = Vec::new();
                let mut from = anchor;
                while let Some(next) = bars.iter().find(|b| b.time >= from) {
                    let window = spec.window(anchor, next.time, 4).unwrap();
                    let inside: Vec<crate::Bar> = bars
                        .iter()
                        .filter(|b| b.time >= window.start && window.end.is_none_or(|e| b.time < e))
                        .cloned()
                        .collect();
                    let rows = resample_anchored(&inside, spec, window.start);
                    assert!(!rows.is_empty() && rows.len() <= 4, "{spec:?}");
                    paged.extend(rows);
                    match window.end {
                        Some(end) => from = end,
                        None => break,
                    }
                }
                assert_eq!(paged, whole, "{spec:?}");
            }
        }
    }

    #[test]
    fn bins_are_the_bins_of_resample() {
        let times = [
            t(2019, 6, 28, 13, 45),
            t(2019, 7, 1, 9, 0),
            t(2019, 9, 30, 23, 59),
            t(2020, 2, 29, 0, 0),
            t(2021, 1, 4, 0, 1),
        ];
        let bars: Vec<crate::Bar> = times
            .iter()
            .map(|&time| crate::Bar {
                symbol: "X".into(),
                time,
                open: Decimal::ONE,
                high: Decimal::ONE,
                low: Decimal::ONE,
                close: Decimal::ONE,
                volume: 1,
            })
            .collect();
        for frequency in Frequency::ALL {
            for interval in [1, 2, 3, 7] {
                let spec = Resample::new(frequency, interval).unwrap();
                let all = bins(spec, times[0], times[4], usize::MAX).unwrap();
                // Contiguous and ordered.
                assert!(all.windows(2).all(|w| w[0].end == Some(w[1].start)));
                // Every bar lies in exactly one bin, the one resample labels it with.
                let rows = resample(&bars, spec);
                for row in &rows {
                    assert!(all.iter().any(|b| b.start == row.period_start), "{spec:?}");
                }
                let holding: Vec<DateTime<Utc>> = bars
                    .iter()
                    .filter_map(|bar| {
                        all.iter()
                            .find(|b| b.start <= bar.time && b.end.is_none_or(|e| bar.time < e))
                            .map(|b| b.start)
                    })
                    .collect();
                let mut labels = holding.clone();
                labels.dedup();
                assert_eq!(holding.len(), bars.len(), "{spec:?}");
                assert_eq!(
                    labels,
                    rows.iter().map(|r| r.period_start).collect::<Vec<_>>(),
                    "{spec:?}"
                );
                // The limit.
                assert_eq!(bins(spec, times[0], times[4], all.len()), Some(all.clone()));
                assert_eq!(bins(spec, times[0], times[4], all.len() - 1), None);
            }
        }
        let annual = Resample::every(Frequency::Annual);
        assert_eq!(
            bins(annual, times[0], times[0], 10),
            Some(vec![Bin {
                start: t(2019, 1, 1, 0, 0),
                end: Some(t(2020, 1, 1, 0, 0))
            }])
        );
        assert_eq!(bins(annual, times[4], times[0], 10), Some(Vec::new()));
    }

    #[test]
    fn period_starts() {
        let time = t(2019, 6, 28, 13, 45); // a Friday
        let start = |f: Frequency| f.period_start(f.period_index(time)).unwrap();
        assert_eq!(start(Frequency::Minute), time);
        assert_eq!(start(Frequency::Hourly), t(2019, 6, 28, 13, 0));
        assert_eq!(start(Frequency::Daily), t(2019, 6, 28, 0, 0));
        assert_eq!(start(Frequency::Weekly), t(2019, 6, 24, 0, 0));
        assert_eq!(start(Frequency::Monthly), t(2019, 6, 1, 0, 0));
        assert_eq!(start(Frequency::Quarterly), t(2019, 4, 1, 0, 0));
        assert_eq!(start(Frequency::Annual), t(2019, 1, 1, 0, 0));
        // Before 1970 too, where naive integer division would round the wrong way.
        let old = t(1969, 12, 31, 23, 59);
        assert_eq!(
            Frequency::Weekly.period_start(Frequency::Weekly.period_index(old)),
            Some(t(1969, 12, 29, 0, 0))
        );
        assert_eq!(
            Frequency::Hourly.period_start(Frequency::Hourly.period_index(old)),
            Some(t(1969, 12, 31, 23, 0))
        );
        // A Monday and a Sunday.
        let monday = t(2024, 1, 1, 0, 0);
        assert_eq!(
            Frequency::Weekly.period_start(Frequency::Weekly.period_index(monday)),
            Some(monday)
        );
        let sunday = t(2024, 1, 7, 23, 59);
        assert_eq!(
            Frequency::Weekly.period_start(Frequency::Weekly.period_index(sunday)),
            Some(monday)
        );
    }

    #[test]
    fn series_kind_of_frequencies() {
        assert_eq!(Frequency::Minute.series_kind(), SeriesKind::Intraday);
        assert_eq!(Frequency::Hourly.series_kind(), SeriesKind::Intraday);
        assert_eq!(Frequency::Daily.series_kind(), SeriesKind::Daily);
        assert_eq!(Frequency::Annual.series_kind(), SeriesKind::Daily);
    }
}
