//! Demo time series: a few years of synthetic daily bars for the simulated feed's stocks, so that
//! the time-series and indicator endpoints have something to show on embedded defaults.
//!
//! Each series is a geometric random walk (about 1.8 % daily volatility) on weekdays, walked
//! backwards from the price the simulated feed starts at, so the daily history leads into the
//! live minute bars without a jump. Bars keep real OHLC relationships: the open gaps a little from
//! the previous close, the high and low lie beyond both open and close, all rounded to the cent.

use bourse_domain::Bar;
use bourse_store::Store;
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;

/// The simulated feed's stocks and the prices it starts them at.
pub const DEMO_STOCKS: [(&str, f64); 3] = [("CIB", 28.0), ("Edita", 19.5), ("Hamada Inc", 7.4)];

/// Years of daily history.
const YEARS: u64 = 3;

/// Seeds the demo bars into an empty bars table; returns how many bars were written (0 when the
/// table already holds bars).
pub async fn seed(store: &Store, today: NaiveDate) -> anyhow::Result<u64> {
    if !store.bars_empty().await? {
        return Ok(0);
    }
    let mut bars = Vec::new();
    for (i, (name, price)) in DEMO_STOCKS.iter().enumerate() {
        bars.extend(synthetic_daily_bars(name, *price, today, 1000 + i as u64));
    }
    store.import_bars(&bars).await?;
    Ok(bars.len() as u64)
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn cents(v: f64) -> Decimal {
    Decimal::from_f64((v * 100.0).round() / 100.0)
        .unwrap_or(Decimal::ONE)
        .round_dp(2)
        .max(Decimal::new(1, 2))
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Weekday bars from `YEARS` years before `today` up to the day before it, the last close near
/// `last_price`. Deterministic for a given `seed`.
pub fn synthetic_daily_bars(
    symbol: &str,
    last_price: f64,
    today: NaiveDate,
    seed: u64,
) -> Vec<Bar> {
    let mut rng = StdRng::seed_from_u64(seed);
    let first = today
        .checked_sub_days(Days::new(365 * YEARS + 1))
        .unwrap_or(today);
    let days: Vec<NaiveDate> = first
        .iter_days()
        .take_while(|d| *d < today)
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .collect();
    // Closes walked backwards from the last one, then read forwards.
    let mut closes = Vec::with_capacity(days.len());
    let mut close = last_price;
    for _ in &days {
        closes.push(close);
        let step = 0.0003 + 0.018 * normal(&mut rng);
        close = (close / step.exp()).max(0.05);
    }
    closes.reverse();
    let mut previous = closes.first().copied().unwrap_or(last_price);
    days.iter()
        .zip(&closes)
        .map(|(day, &close)| {
            let open = previous * (1.0 + 0.004 * normal(&mut rng));
            let top = open.max(close) * (1.0 + 0.008 * normal(&mut rng).abs());
            let bottom = open.min(close) * (1.0 - 0.008 * normal(&mut rng).abs());
            previous = close;
            let (open, close) = (cents(open), cents(close));
            let high = cents(top).max(open).max(close);
            let low = cents(bottom).min(open).min(close);
            Bar {
                symbol: symbol.to_string(),
                time: midnight(*day),
                open,
                high,
                low,
                close,
                volume: rng.gen_range(80_000..2_500_000),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realistic_bars() {
        let today = NaiveDate::from_ymd_opt(2024, 6, 14).unwrap();
        let bars = synthetic_daily_bars("CIB", 28.0, today, 7);
        assert!(
            bars.len() > 700,
            "about 3 years of weekdays: {}",
            bars.len()
        );
        for b in &bars {
            b.validate().unwrap();
            assert!(!matches!(b.time.weekday(), Weekday::Sat | Weekday::Sun));
            assert!(b.time < midnight(today));
        }
        assert!(bars.windows(2).all(|w| w[0].time < w[1].time));
        let last = bars.last().unwrap().close;
        assert!(
            (last - Decimal::from(28)).abs() < Decimal::new(5, 2),
            "{last}"
        );
        assert_eq!(
            bars,
            synthetic_daily_bars("CIB", 28.0, today, 7),
            "deterministic"
        );
    }
}
