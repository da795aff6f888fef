//! Live ticks rolled up into 1-minute bars, stored under the stock's name.
//!
//! A minute bar is the open, high, low and close of the ticks whose timestamps fall in that minute
//! (UTC), and its volume is the number of those ticks (the feed carries no traded quantity). Ticks
//! may arrive late and out of order, in any batch: a [`MinuteRollup`] therefore keeps the
//! timestamps of the ticks that set its open and its close (`open_at`, `close_at`), so that a late
//! tick older than the current open becomes the open, and one newer than the current close
//! becomes the close, whatever order the batches commit in. [`MinuteRollup::merge`] is
//! associative and commutative over distinct ticks (ties on the timestamp keep the bar already
//! stored for the open and let the newcomer win for the close), which is what makes the stored
//! bar independent of how ticks were batched.
//!
//! Bars that did not come from ticks (imported from CSV) carry no `open_at`/`close_at`; a tick
//! landing on such a bar keeps its open, may extend its high and low, becomes its close, and adds
//! one to its volume.

use crate::tick::Tick;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// One minute of one symbol, as ticks build it. Also the shape of a stored minute bar, so the
/// same [`merge`](MinuteRollup::merge) serves the engines that merge in Rust (SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteRollup {
    pub symbol: String,
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    pub open: Decimal,
    /// Timestamp of the tick that set `open`; `None` for a bar that was not built from ticks.
    pub open_at: Option<DateTime<Utc>>,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    /// Timestamp of the tick that set `close`; `None` for a bar that was not built from ticks.
    pub close_at: Option<DateTime<Utc>>,
    /// Number of ticks (for bars built from ticks).
    pub volume: i64,
}

/// The start of the minute that contains `t`.
pub fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    // Cannot fail for a minute step on any representable instant; the fallback is a formality.
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

impl MinuteRollup {
    /// The bar of a single tick.
    pub fn of_tick(tick: &Tick) -> MinuteRollup {
        MinuteRollup {
            symbol: tick.name.clone(),
            minute: minute_of(tick.timestamp),
            open: tick.price,
            open_at: Some(tick.timestamp),
            high: tick.price,
            low: tick.price,
            close: tick.price,
            close_at: Some(tick.timestamp),
            volume: 1,
        }
    }

    /// Folds `newer` (ticks not counted in `self` yet) into `self`. Both must be the same symbol
    /// and minute. See the module documentation for the rules.
    pub fn merge(&mut self, newer: &MinuteRollup) {
        if let (Some(new_open), Some(old_open)) = (newer.open_at, self.open_at) {
            if new_open < old_open {
                self.open = newer.open;
                self.open_at = Some(new_open);
            }
        }
        if newer.high > self.high {
            self.high = newer.high;
        }
        if newer.low < self.low {
            self.low = newer.low;
        }
        let newer_closes = match (newer.close_at, self.close_at) {
            (Some(new_close), Some(old_close)) => new_close >= old_close,
            // A bar not built from ticks: the tick, being live, is taken as later.
            (Some(_), None) => true,
            (None, _) => false,
        };
        if newer_closes {
            self.close = newer.close;
            self.close_at = newer.close_at;
        }
        self.volume = self.volume.saturating_add(newer.volume);
    }
}

crate::impl_ohlcv!(MinuteRollup, minute);

/// Rolls `ticks` (distinct, in any order) up into one bar per (name, minute), sorted by name then
/// minute, the order in which a writer should lock rows so that concurrent writers cannot deadlock.
pub fn roll_up(ticks: &[Tick]) -> Vec<MinuteRollup> {
    let mut bars: BTreeMap<(&str, DateTime<Utc>), MinuteRollup> = BTreeMap::new();
    for tick in ticks {
        let bar = MinuteRollup::of_tick(tick);
        match bars.get_mut(&(tick.name.as_str(), bar.minute)) {
            Some(existing) => existing.merge(&bar),
            None => {
                bars.insert((tick.name.as_str(), bar.minute), bar);
            }
        }
    }
    bars.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;
    use uuid::Uuid;

    fn tick(name: &str, price: &str, h: u32, m: u32, s: u32, micros: u32) -> Tick {
        Tick {
            stock_id: Uuid::nil(),
            name: name.into(),
            price: Decimal::from_str(price).unwrap(),
            availability: 1,
            timestamp: Utc.with_ymd_and_hms(2024, 3, 1, h, m, s).unwrap()
                + TimeDelta::microseconds(i64::from(micros)),
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn one_bar_per_name_and_minute_sorted() {
        let ticks = [
            tick("Edita", "11", 10, 0, 5, 0),
            tick("CIB", "28", 10, 1, 0, 0),
            tick("CIB", "27", 10, 0, 59, 999_999),
            tick("CIB", "29", 10, 0, 0, 0),
        ];
        let bars = roll_up(&ticks);
        let keys: Vec<(&str, u32)> = bars
            .iter()
            .map(|b| (b.symbol.as_str(), chrono::Timelike::minute(&b.minute)))
            .collect();
        assert_eq!(keys, [("CIB", 0), ("CIB", 1), ("Edita", 0)]);
        let cib = &bars[0];
        assert_eq!(
            cib.minute,
            Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap()
        );
        assert_eq!((cib.open, cib.close), (d("29"), d("27")));
        assert_eq!((cib.high, cib.low, cib.volume), (d("29"), d("27"), 2));
    }

    #[test]
    fn out_of_order_ticks_give_the_same_bar_whatever_the_batching() {
        let ticks = [
            tick("CIB", "28.10", 10, 0, 30, 0),
            tick("CIB", "28.50", 10, 0, 45, 0),
            tick("CIB", "27.90", 10, 0, 10, 0),
            tick("CIB", "28.00", 10, 0, 50, 0),
            tick("CIB", "28.70", 10, 0, 20, 0),
        ];
        let whole = roll_up(&ticks);
        assert_eq!(whole.len(), 1);
        let bar = &whole[0];
        assert_eq!(bar.open, d("27.90"), "the earliest tick opens");
        assert_eq!(bar.close, d("28.00"), "the latest tick closes");
        assert_eq!((bar.high, bar.low, bar.volume), (d("28.70"), d("27.90"), 5));
        // Tick by tick, in arrival order, as one-tick batches would store it.
        let mut stored = MinuteRollup::of_tick(&ticks[0]);
        for t in &ticks[1..] {
            stored.merge(&MinuteRollup::of_tick(t));
        }
        assert_eq!(&stored, bar);
        // Two batches, merged in the other order.
        let mut late = roll_up(&ticks[3..])[0].clone();
        late.merge(&roll_up(&ticks[..3])[0]);
        assert_eq!(&late, bar);
    }

    #[test]
    fn a_tick_on_an_imported_bar_keeps_its_open_and_becomes_its_close() {
        let mut imported = MinuteRollup {
            symbol: "CIB".into(),
            minute: Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap(),
            open: d("10"),
            open_at: None,
            high: d("12"),
            low: d("9"),
            close: d("11"),
            close_at: None,
            volume: 1000,
        };
        imported.merge(&MinuteRollup::of_tick(&tick("CIB", "13", 10, 0, 1, 0)));
        assert_eq!(imported.open, d("10"));
        assert_eq!((imported.high, imported.low), (d("13"), d("9")));
        assert_eq!(imported.close, d("13"));
        assert_eq!(imported.volume, 1001);
    }
}
