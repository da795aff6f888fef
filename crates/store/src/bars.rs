//! OHLCV bars: bulk import (upsert by `(symbol, ts)`), range reads for the time-series and
//! indicator endpoints, an optional SQL push-down of resampling on PostgreSQL, and the roll-up of
//! live ticks into 1-minute bars that [`Store::ingest`] runs inside its own transaction.
//!
//! Prices stay exact: NUMERIC on PostgreSQL, decimal TEXT on SQLite (which is why SQLite merges
//! minute bars in Rust: TEXT does not compare as numbers).

use crate::row::Columns;
use crate::{Store, StoreError};
use async_trait::async_trait;
use bourse_domain::{Bar, Frequency, Resample, ResampledBar};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;

pub use bourse_domain::SeriesBar;

/// The widest range PostgreSQL's `timestamptz` and SQLite's microseconds both hold comfortably;
/// open bounds are bound as these so that the same prepared statement (and its index range scan)
/// serves every request.
pub(crate) fn lower_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(crate) fn upper_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Keeps the last of several bars with the same `(symbol, time)` (a later row of a file wins, as
/// it would row by row), sorted by `(symbol, time)`: PostgreSQL refuses to upsert one row twice
/// in a statement, and a fixed order means concurrent writers lock rows in the same order.
pub(crate) fn last_per_key(bars: &[Bar]) -> Vec<&Bar> {
    let mut index: HashMap<(&str, DateTime<Utc>), usize> = HashMap::with_capacity(bars.len());
    for (i, b) in bars.iter().enumerate() {
        index.insert((b.symbol.as_str(), b.time), i);
    }
    let mut unique: Vec<&Bar> = if index.len() == bars.len() {
        bars.iter().collect()
    } else {
        let mut keep: Vec<usize> = index.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|i| &bars[i]).collect()
    };
    unique.sort_by(|a, b| (a.symbol.as_str(), a.time).cmp(&(b.symbol.as_str(), b.time)));
    unique
}

/// The columns `ts, open, high, low, close, volume` of a bar.
pub(crate) fn series_bar(r: &impl Columns) -> Result<SeriesBar, StoreError> {
    Ok(SeriesBar {
        symbol: (),
        time: r.instant(0)?,
        open: r.decimal(1)?,
        high: r.decimal(2)?,
        low: r.decimal(3)?,
        close: r.decimal(4)?,
        volume: r.int(5)?,
    })
}

/// When a committed import batch must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// When the commit returns (the default of every write).
    Immediate,
    /// PostgreSQL: the commit returns before its WAL is flushed (`synchronous_commit = off`, a
    /// fraction of a second later); a crash may lose the last batches, which a bulk loader can
    /// simply load again. [`Store::flush_deferred`] makes every earlier commit durable. SQLite
    /// (WAL mode, `synchronous = NORMAL`) behaves like this for every write anyway.
    Deferred,
}

/// The bars of `symbol` in `[from, to]`, by time, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct BarRange<'a> {
    pub symbol: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub limit: i64,
}

/// What [`Store::resample_in_database`] is asked, bounds resolved.
#[derive(Debug, Clone, Copy)]
pub struct ResampleQuery<'a> {
    pub symbol: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub spec: Resample,
    pub when: PushDown,
    pub anchor: Option<DateTime<Utc>>,
    /// At most this many bins, from the one holding the first bar of the range: one page.
    pub bins: Option<u32>,
}

/// What the database resampled: the rows, and whether bars of the range lie past them (the
/// query's `bins` cut it short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResampledRows {
    pub rows: Vec<ResampledBar>,
    pub more: bool,
}

/// The bars' storage, one implementation per engine (see the module doc).
#[async_trait]
pub trait BarRepo: Send + Sync {
    /// [`Store::import_bars_with`], `bars` not empty.
    async fn import(&self, bars: &[Bar], durability: Durability) -> Result<u64, StoreError>;
    async fn flush_deferred(&self) -> Result<(), StoreError>;
    async fn range(&self, q: BarRange<'_>) -> Result<Vec<SeriesBar>, StoreError>;
    async fn has_bars(&self, symbol: &str) -> Result<bool, StoreError>;
    async fn bars_empty(&self) -> Result<bool, StoreError>;
    /// [`Store::resample_in_database`]; `None` where the engine does not resample.
    async fn resample(&self, q: ResampleQuery<'_>) -> Result<Option<ResampledRows>, StoreError>;
}

impl Store {
    /// [`Store::import_bars_with`] and [`Durability::Immediate`].
    pub async fn import_bars(&self, bars: &[Bar]) -> Result<u64, StoreError> {
        self.import_bars_with(bars, Durability::Immediate).await
    }

    /// Waits until every commit made so far with [`Durability::Deferred`] is durable: commits a
    /// transaction that has a transaction id synchronously, which flushes the write-ahead log up
    /// to its commit record, and so every earlier commit.
    pub async fn flush_deferred(&self) -> Result<(), StoreError> {
        self.bars.flush_deferred().await
    }

    /// Upserts `bars` by `(symbol, time)` in one transaction: an imported bar replaces whatever
    /// was stored for that key (including a minute bar of live ticks). Returns the number of
    /// distinct keys written.
    ///
    /// PostgreSQL: the batch is sent once in `COPY`'s binary format, straight into the table
    /// when its keys are new, else into a staging table and upserted from there with
    /// `INSERT … ON CONFLICT DO UPDATE`. SQLite: prepared multi-row `INSERT … VALUES … ON
    /// CONFLICT DO UPDATE` statements of 1,000 rows on the single writer.
    pub async fn import_bars_with(
        &self,
        bars: &[Bar],
        durability: Durability,
    ) -> Result<u64, StoreError> {
        if bars.is_empty() {
            return Ok(0);
        }
        self.bars.import(bars, durability).await
    }

    /// The bars of `symbol` with `from <= time <= to` (open bounds when `None`), by time.
    pub async fn bars(
        &self,
        symbol: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<SeriesBar>, StoreError> {
        self.bars_limited(symbol, from, to, None).await
    }

    /// [`Store::bars`], the first `limit` of them at most: one page of a series.
    pub async fn bars_limited(
        &self,
        symbol: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: Option<u32>,
    ) -> Result<Vec<SeriesBar>, StoreError> {
        let q = BarRange {
            symbol,
            from: from.unwrap_or_else(lower_bound),
            to: to.unwrap_or_else(upper_bound),
            limit: limit.map_or(i64::MAX, i64::from),
        };
        self.bars.range(q).await
    }

    /// True when at least one bar of `symbol` is stored (whatever its time): what tells an
    /// unknown symbol (404) from an empty range (200 with no rows).
    pub async fn has_bars(&self, symbol: &str) -> Result<bool, StoreError> {
        self.bars.has_bars(symbol).await
    }

    /// True when the bars table holds no row at all (demo seeding fills only an empty table).
    pub async fn bars_empty(&self) -> Result<bool, StoreError> {
        self.bars.bars_empty().await
    }

    /// Resampling pushed down into PostgreSQL: the database aggregates the range bin by bin and
    /// returns one row per bin instead of every bar, with exactly the rules of
    /// [`bourse_domain::resample()`] (same bins, same anchoring, empty bins omitted).
    ///
    /// The bins are computed in Rust ([`bourse_domain::resample::bins`]) and sent as two arrays;
    /// each bin is then an index range scan of `(symbol, ts)`: its open and close are the first
    /// and last row of the range, high, low and volume one aggregate over it. No per-row calendar
    /// arithmetic, no hashing, no plan that depends on guessing the number of groups. Ranges with
    /// more than [`MAX_BINS`] bins (minute bins over years) are grouped by a computed bin instead.
    ///
    /// `None` means "resample in Rust instead": always on SQLite, and with
    /// [`PushDown::WhenCoarse`] when the bins are not much coarser than the bars (see
    /// [`PUSH_DOWN_MIN_BARS_PER_BIN`]).
    ///
    /// With `anchor`, the bins are anchored at its period instead of the first bar's (see
    /// [`bourse_domain::resample_anchored`]): one page of a longer series.
    ///
    /// With `bins`, at most that many bins, from the one holding the range's first bar: one page
    /// of a resampled series, in as many round trips as the whole range.
    #[allow(clippy::too_many_arguments)]
    pub async fn resample_in_database(
        &self,
        symbol: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        spec: Resample,
        when: PushDown,
        anchor: Option<DateTime<Utc>>,
        bins: Option<u32>,
    ) -> Result<Option<ResampledRows>, StoreError> {
        let q = ResampleQuery {
            symbol,
            from: from.unwrap_or_else(lower_bound),
            to: to.unwrap_or_else(upper_bound),
            spec,
            when,
            anchor,
            bins,
        };
        self.bars.resample(q).await
    }
}

/// More bins than this are grouped by a computed bin rather than probed one by one: each bin
/// costs three index probes, empty or not, so a few thousand cost a few milliseconds, while
/// grouping costs per bar.
pub const MAX_BINS: usize = 5_000;

/// Whether [`Store::resample_in_database`] always pushes down, or only when it pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDown {
    Always,
    WhenCoarse,
}

/// Pushing resampling down pays when each bin holds many bars, and costs when it holds few
/// (docs/decisions/0002-resampling-push-down.md). Below this many bars per bin (judged from the
/// spacing of the first two bars) the Rust path is used.
pub const PUSH_DOWN_MIN_BARS_PER_BIN: i64 = 50;

/// The usual length of a period, enough to compare it with the spacing of bars.
pub(crate) fn nominal_seconds(frequency: Frequency) -> i64 {
    match frequency {
        Frequency::Minute => 60,
        Frequency::Hourly => 3_600,
        Frequency::Daily => 86_400,
        Frequency::Weekly => 7 * 86_400,
        Frequency::Monthly => 30 * 86_400,
        Frequency::Quarterly => 91 * 86_400,
        Frequency::Annual => 365 * 86_400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};
    use rust_decimal::Decimal;

    fn bar(symbol: &str, day: u32, close: i64) -> Bar {
        Bar {
            symbol: symbol.into(),
            time: Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap(),
            open: Decimal::from(close),
            high: Decimal::from(close),
            low: Decimal::from(close),
            close: Decimal::from(close),
            volume: 1,
        }
    }

    #[test]
    fn last_row_per_key_wins_and_rows_are_sorted() {
        let bars = [
            bar("B", 2, 1),
            bar("A", 3, 2),
            bar("B", 2, 3),
            bar("A", 1, 4),
        ];
        let kept: Vec<(&str, u32, i64)> = last_per_key(&bars)
            .iter()
            .map(|b| {
                (
                    b.symbol.as_str(),
                    b.time.day(),
                    i64::try_from(b.close.mantissa()).unwrap(),
                )
            })
            .collect();
        assert_eq!(kept, [("A", 1, 4), ("A", 3, 2), ("B", 2, 3)]);
    }
}
