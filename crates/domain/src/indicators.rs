//! Technical indicators on the closing prices of a bar series, following TA-Lib's conventions
//! (seeding, alignment, smoothing) so that numbers agree with what analysts get from TA-Lib,
//! pandas-ta and most charting tools.
//!
//! | indicator | first row at bar index | notes |
//! |---|---|---|
//! | [`sma`]`(w)` | `w - 1` | running sum, as TA-Lib |
//! | [`ema`]`(w)` | `w - 1` | seeded with the SMA of the first `w` closes, `k = 2 / (w + 1)` |
//! | [`rsi`]`(w)` | `w` | Wilder smoothing; seeded with the plain averages of the first `w` changes |
//! | [`macd`]`(f, s, g)` | `s - 1 + g - 1` | TA-Lib's alignment, see [`macd`] |
//! | [`bollinger`]`(w, k)` | `w - 1` | SMA ± k · population standard deviation |
//! | [`vwap`] | first bar with volume | cumulative typical price `(h + l + c) / 3` weighted by volume |
//!
//! Rows without enough history are omitted, never filled with NaN, so a window longer than the
//! series gives an empty result. Indicators work on bar positions, not on the calendar: gaps
//! between dates (weekends, holidays, missing data) are invisible to them, as in TA-Lib.
//!
//! # Why `f64`
//! Bars hold prices as exact decimals because they are money. Indicators are statistics of those
//! prices: they divide, take square roots and apply recursive exponential smoothing, whose exact
//! decimal results do not exist (a square root or `2/21` has no finite decimal expansion) and
//! whose decimal approximations would overflow `Decimal`'s 28 digits in long recursions. The
//! reference everyone compares against, TA-Lib, computes in `f64`; doing the same, in the same
//! order of operations, reproduces its values to the last few bits and is an order of magnitude
//! faster. The results are `f64`; rounding them for display is the caller's business.

use crate::bar::Ohlcv;
use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// Largest window (or period) accepted, TA-Lib's own upper bound.
pub const MAX_WINDOW: usize = 100_000;

pub const DEFAULT_SMA_WINDOW: usize = 20;
pub const DEFAULT_EMA_WINDOW: usize = 20;
pub const DEFAULT_RSI_WINDOW: usize = 14;
pub const DEFAULT_MACD_FAST: usize = 12;
pub const DEFAULT_MACD_SLOW: usize = 26;
pub const DEFAULT_MACD_SIGNAL: usize = 9;
pub const DEFAULT_BOLLINGER_WINDOW: usize = 20;
pub const DEFAULT_BOLLINGER_K: f64 = 2.0;

/// One value of a single-valued indicator, at the time of the bar it was computed for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndicatorPoint {
    pub time: DateTime<Utc>,
    pub value: f64,
}

/// One row of [`macd`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdPoint {
    pub time: DateTime<Utc>,
    /// Fast EMA minus slow EMA.
    pub macd: f64,
    /// EMA of the MACD line.
    pub signal: f64,
    /// `macd - signal`.
    pub histogram: f64,
}

/// One row of [`bollinger`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BollingerPoint {
    pub time: DateTime<Utc>,
    pub upper: f64,
    /// The simple moving average.
    pub middle: f64,
    pub lower: f64,
}

/// Why an indicator request was refused. [`IndicatorError::UnknownIndicator`] means "no such
/// resource" (404 in the API); every other variant is a bad request (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    #[error("unknown indicator {0:?}; expected one of sma, ema, rsi, macd, bollinger, vwap")]
    UnknownIndicator(String),
    #[error("unknown parameter {parameter:?} for {indicator}")]
    UnknownParameter {
        indicator: &'static str,
        parameter: String,
    },
    #[error("parameter `{0}` is given more than once")]
    DuplicateParameter(&'static str),
    #[error("invalid `{parameter}`: {message}")]
    InvalidParameter {
        parameter: &'static str,
        message: String,
    },
}

impl IndicatorError {
    /// True for an unknown indicator name, which the API answers with 404 rather than 400.
    pub fn is_unknown_indicator(&self) -> bool {
        matches!(self, IndicatorError::UnknownIndicator(_))
    }
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> IndicatorError {
    IndicatorError::InvalidParameter {
        parameter,
        message: message.into(),
    }
}

fn check_window(parameter: &'static str, window: usize) -> Result<(), IndicatorError> {
    if window == 0 || window > MAX_WINDOW {
        return Err(invalid(
            parameter,
            format!("must be an integer from 1 to {MAX_WINDOW}"),
        ));
    }
    Ok(())
}

/// An indicator with its parameters, as named in the API (`/stocks/indicators/{symbol}/{name}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Indicator {
    Sma {
        window: usize,
    },
    Ema {
        window: usize,
    },
    Rsi {
        window: usize,
    },
    Macd {
        fast: usize,
        slow: usize,
        signal: usize,
    },
    Bollinger {
        window: usize,
        k: f64,
    },
    Vwap,
}

/// The output of [`Indicator::compute`]: single values, or the named fields of MACD and
/// Bollinger bands.
#[derive(Debug, Clone, PartialEq)]
pub enum IndicatorSeries {
    Values(Vec<IndicatorPoint>),
    Macd(Vec<MacdPoint>),
    Bollinger(Vec<BollingerPoint>),
}

impl IndicatorSeries {
    pub fn len(&self) -> usize {
        match self {
            IndicatorSeries::Values(v) => v.len(),
            IndicatorSeries::Macd(v) => v.len(),
            IndicatorSeries::Bollinger(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Indicator {
    /// The indicator names the API knows.
    pub const NAMES: [&'static str; 6] = ["sma", "ema", "rsi", "macd", "bollinger", "vwap"];

    pub fn name(&self) -> &'static str {
        match self {
            Indicator::Sma { .. } => "sma",
            Indicator::Ema { .. } => "ema",
            Indicator::Rsi { .. } => "rsi",
            Indicator::Macd { .. } => "macd",
            Indicator::Bollinger { .. } => "bollinger",
            Indicator::Vwap => "vwap",
        }
    }

    /// The indicator `name` with its default parameters (sma/ema 20, rsi 14, macd 12/26/9,
    /// bollinger 20/2). Names are exact and lower case.
    pub fn with_defaults(name: &str) -> Result<Indicator, IndicatorError> {
        Ok(match name {
            "sma" => Indicator::Sma {
                window: DEFAULT_SMA_WINDOW,
            },
            "ema" => Indicator::Ema {
                window: DEFAULT_EMA_WINDOW,
            },
            "rsi" => Indicator::Rsi {
                window: DEFAULT_RSI_WINDOW,
            },
            "macd" => Indicator::Macd {
                fast: DEFAULT_MACD_FAST,
                slow: DEFAULT_MACD_SLOW,
                signal: DEFAULT_MACD_SIGNAL,
            },
            "bollinger" => Indicator::Bollinger {
                window: DEFAULT_BOLLINGER_WINDOW,
                k: DEFAULT_BOLLINGER_K,
            },
            "vwap" => Indicator::Vwap,
            other => {
                return Err(IndicatorError::UnknownIndicator(
                    other.chars().take(40).collect(),
                ))
            }
        })
    }

    /// Builds an indicator from its name and the query parameters meant for it (the caller
    /// removes its own, such as `start`, `end`, `frequency`, `interval`). Parameters not given
    /// keep their defaults; unknown, repeated or invalid ones are errors, and the result is
    /// validated ([`Indicator::validate`]).
    pub fn from_query<'a, I>(name: &str, params: I) -> Result<Indicator, IndicatorError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut indicator = Indicator::with_defaults(name)?;
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in params {
            let parameter =
                indicator
                    .parameter_name(key)
                    .ok_or_else(|| IndicatorError::UnknownParameter {
                        indicator: indicator.name(),
                        parameter: key.chars().take(40).collect(),
                    })?;
            if seen.contains(&parameter) {
                return Err(IndicatorError::DuplicateParameter(parameter));
            }
            seen.push(parameter);
            let value = value.trim();
            match (&mut indicator, parameter) {
                (Indicator::Bollinger { k, .. }, "k") => *k = parse_k(value)?,
                (
                    Indicator::Sma { window }
                    | Indicator::Ema { window }
                    | Indicator::Rsi { window }
                    | Indicator::Bollinger { window, .. },
                    "window",
                ) => *window = parse_window("window", value)?,
                (Indicator::Macd { fast, .. }, "fast") => *fast = parse_window("fast", value)?,
                (Indicator::Macd { slow, .. }, "slow") => *slow = parse_window("slow", value)?,
                (Indicator::Macd { signal, .. }, "signal") => {
                    *signal = parse_window("signal", value)?
                }
                // `parameter_name` only returns names handled above.
                _ => {}
            }
        }
        indicator.validate()?;
        Ok(indicator)
    }

    /// The parameter names this indicator takes, as `'static` strings.
    fn parameter_name(&self, key: &str) -> Option<&'static str> {
        let names: &[&'static str] = match self {
            Indicator::Sma { .. } | Indicator::Ema { .. } | Indicator::Rsi { .. } => &["window"],
            Indicator::Macd { .. } => &["fast", "slow", "signal"],
            Indicator::Bollinger { .. } => &["window", "k"],
            Indicator::Vwap => &[],
        };
        names.iter().copied().find(|n| *n == key)
    }

    /// Checks the parameters: windows from 1 to [`MAX_WINDOW`], MACD `fast < slow`, Bollinger
    /// `k` finite and positive.
    ///
    /// TA-Lib itself wants windows of at least 2; a window of 1 is accepted here because every
    /// formula has an obvious meaning for it (the SMA and EMA of 1 close are the close).
    pub fn validate(&self) -> Result<(), IndicatorError> {
        match *self {
            Indicator::Sma { window } | Indicator::Ema { window } | Indicator::Rsi { window } => {
                check_window("window", window)
            }
            Indicator::Macd { fast, slow, signal } => {
                check_window("fast", fast)?;
                check_window("slow", slow)?;
                check_window("signal", signal)?;
                if fast >= slow {
                    return Err(invalid("fast", "must be less than `slow`"));
                }
                Ok(())
            }
            Indicator::Bollinger { window, k } => {
                check_window("window", window)?;
                if !(k.is_finite() && k > 0.0) {
                    return Err(invalid("k", "must be a positive number"));
                }
                Ok(())
            }
            Indicator::Vwap => Ok(()),
        }
    }

    /// Number of leading bars that produce no row (TA-Lib's "lookback"). A caller that wants
    /// values from a given date on can fetch this many bars before it.
    pub fn lookback(&self) -> usize {
        match *self {
            Indicator::Sma { window } | Indicator::Ema { window } => window.saturating_sub(1),
            Indicator::Bollinger { window, .. } => window.saturating_sub(1),
            Indicator::Rsi { window } => window,
            Indicator::Macd { slow, signal, .. } => {
                slow.saturating_sub(1) + signal.saturating_sub(1)
            }
            Indicator::Vwap => 0,
        }
    }

    /// Computes the indicator over `bars` (sorted by time).
    pub fn compute<B: Ohlcv>(&self, bars: &[B]) -> Result<IndicatorSeries, IndicatorError> {
        Ok(match *self {
            Indicator::Sma { window } => IndicatorSeries::Values(sma(bars, window)?),
            Indicator::Ema { window } => IndicatorSeries::Values(ema(bars, window)?),
            Indicator::Rsi { window } => IndicatorSeries::Values(rsi(bars, window)?),
            Indicator::Macd { fast, slow, signal } => {
                IndicatorSeries::Macd(macd(bars, fast, slow, signal)?)
            }
            Indicator::Bollinger { window, k } => {
                IndicatorSeries::Bollinger(bollinger(bars, window, k)?)
            }
            Indicator::Vwap => IndicatorSeries::Values(vwap(bars)),
        })
    }
}

fn parse_window(parameter: &'static str, text: &str) -> Result<usize, IndicatorError> {
    let window = text.parse::<usize>().map_err(|_| {
        invalid(
            parameter,
            format!("must be an integer from 1 to {MAX_WINDOW}"),
        )
    })?;
    check_window(parameter, window)?;
    Ok(window)
}

fn parse_k(text: &str) -> Result<f64, IndicatorError> {
    match text.parse::<f64>() {
        Ok(k) if k.is_finite() && k > 0.0 => Ok(k),
        _ => Err(invalid("k", "must be a positive number")),
    }
}

/// Simple moving average of the closes over `window` bars.
pub fn sma<B: Ohlcv>(bars: &[B], window: usize) -> Result<Vec<IndicatorPoint>, IndicatorError> {
    check_window("window", window)?;
    let closes = closes(bars);
    Ok(points(bars, window - 1, sma_values(&closes, window)))
}

/// Exponential moving average, TA-Lib style: the first value (at bar `window - 1`) is the SMA of
/// the first `window` closes, then `ema = (close - ema) * k + ema` with `k = 2 / (window + 1)`.
pub fn ema<B: Ohlcv>(bars: &[B], window: usize) -> Result<Vec<IndicatorPoint>, IndicatorError> {
    check_window("window", window)?;
    let closes = closes(bars);
    Ok(points(
        bars,
        window - 1,
        ema_values(&closes, window, window - 1),
    ))
}

/// Relative strength index with Wilder's smoothing, TA-Lib style.
///
/// The average gain and loss start as the plain means of the first `window` close-to-close
/// changes, so the first value is at bar `window`; then `avg = (avg * (window - 1) + x) / window`.
/// `rsi = 100 * gain / (gain + loss)`: 100 when prices only rose, 0 when they only fell, and 0
/// when they did not move at all, which is what TA-Lib returns (it treats `gain + loss` below
/// 1e-8 as zero, and so does this function, to agree with it).
pub fn rsi<B: Ohlcv>(bars: &[B], window: usize) -> Result<Vec<IndicatorPoint>, IndicatorError> {
    check_window("window", window)?;
    let closes = closes(bars);
    Ok(points(bars, window, rsi_values(&closes, window)))
}

/// Moving average convergence/divergence with TA-Lib's alignment.
///
/// Both EMAs produce their first value at bar `slow - 1`: the slow one seeded with the SMA of the
/// first `slow` closes, the fast one — this is TA-Lib's particular choice — seeded with the SMA of
/// the `fast` closes ending at bar `slow - 1`, not of the first `fast` closes. The MACD line is
/// their difference, the signal line its EMA (seeded with the SMA of its first `signal` values),
/// and rows start where the signal exists, at bar `slow - 1 + signal - 1` (33 for 12/26/9).
pub fn macd<B: Ohlcv>(
    bars: &[B],
    fast: usize,
    slow: usize,
    signal: usize,
) -> Result<Vec<MacdPoint>, IndicatorError> {
    Indicator::Macd { fast, slow, signal }.validate()?;
    let closes = closes(bars);
    if closes.len() < slow + signal - 1 {
        return Ok(Vec::new());
    }
    let slow_ema = ema_values(&closes, slow, slow - 1);
    let fast_ema = ema_values(&closes, fast, slow - 1);
    let line: Vec<f64> = fast_ema.iter().zip(&slow_ema).map(|(f, s)| f - s).collect();
    let signal_line = ema_values(&line, signal, signal - 1);
    let first = slow - 1 + signal - 1;
    Ok(bars
        .iter()
        .skip(first)
        .zip(line.iter().skip(signal - 1))
        .zip(signal_line)
        .map(|((bar, &macd), signal)| MacdPoint {
            time: bar.time(),
            macd,
            signal,
            histogram: macd - signal,
        })
        .collect())
}

/// Bollinger bands: the SMA of `window` closes ± `k` population standard deviations of those
/// closes (TA-Lib's BBANDS with a simple moving average).
///
/// The standard deviation is computed with a rolling Welford update, re-synchronised with an
/// exact two-pass computation every `window` rows, so that rounding errors cannot accumulate
/// over long series (TA-Lib uses `E[x²] - E[x]²` and then zeroes any deviation below 1e-4 to
/// hide that formula's cancellation noise; this avoids the noise instead, so bands of sub-cent
/// prices keep their width). Flat prices give a deviation of exactly 0.
pub fn bollinger<B: Ohlcv>(
    bars: &[B],
    window: usize,
    k: f64,
) -> Result<Vec<BollingerPoint>, IndicatorError> {
    Indicator::Bollinger { window, k }.validate()?;
    let closes = closes(bars);
    let middle = sma_values(&closes, window);
    let deviation = population_std_values(&closes, window);
    Ok(bars
        .iter()
        .skip(window - 1)
        .zip(middle)
        .zip(deviation)
        .map(|((bar, middle), std)| BollingerPoint {
            time: bar.time(),
            upper: middle + k * std,
            middle,
            lower: middle - k * std,
        })
        .collect())
}

/// Volume-weighted average price, cumulative from the first bar: the sum of typical price
/// `(high + low + close) / 3` times volume, over the sum of volume. Leading bars while the
/// cumulative volume is still 0 have no defined value and are omitted.
pub fn vwap<B: Ohlcv>(bars: &[B]) -> Vec<IndicatorPoint> {
    let mut weighted = 0.0_f64;
    let mut volume: i128 = 0;
    let mut out = Vec::with_capacity(bars.len());
    for bar in bars {
        let typical = (to_f64(bar.high()) + to_f64(bar.low()) + to_f64(bar.close())) / 3.0;
        let v = bar.volume();
        weighted += typical * v as f64;
        volume += i128::from(v);
        if volume > 0 {
            out.push(IndicatorPoint {
                time: bar.time(),
                value: weighted / volume as f64,
            });
        }
    }
    out
}

fn to_f64(value: Decimal) -> f64 {
    // Every `Decimal` is within `f64`'s range, so this never falls back in practice.
    value.to_f64().unwrap_or(f64::NAN)
}

fn closes<B: Ohlcv>(bars: &[B]) -> Vec<f64> {
    bars.iter().map(|b| to_f64(b.close())).collect()
}

/// Pairs `values` (the indicator's outputs, the first one belonging to bar `first`) with times.
fn points<B: Ohlcv>(bars: &[B], first: usize, values: Vec<f64>) -> Vec<IndicatorPoint> {
    bars.iter()
        .skip(first)
        .zip(values)
        .map(|(bar, value)| IndicatorPoint {
            time: bar.time(),
            value,
        })
        .collect()
}

/// SMA values; the first belongs to index `window - 1`. Same running-sum order as TA-Lib.
fn sma_values(x: &[f64], window: usize) -> Vec<f64> {
    if window == 0 || x.len() < window {
        return Vec::new();
    }
    let n = window as f64;
    let mut sum: f64 = x[..window - 1].iter().sum();
    let mut out = Vec::with_capacity(x.len() + 1 - window);
    for i in window - 1..x.len() {
        sum += x[i];
        out.push(sum / n);
        sum -= x[i + 1 - window];
    }
    out
}

/// TA-Lib's EMA (TA_INT_EMA) with its first value at index `first` (`>= window - 1`): the starting value
/// is the mean of the `window` values ending at `first`, then `ema = (x - ema) * k + ema`. Plain EMA
/// uses `first = window - 1`; MACD starts both its EMAs at the slow one's first index.
fn ema_values(x: &[f64], window: usize, first: usize) -> Vec<f64> {
    if window == 0 || first + 1 < window || x.len() <= first {
        return Vec::new();
    }
    let k = 2.0 / (window as f64 + 1.0);
    let mut value = x[first + 1 - window..=first].iter().sum::<f64>() / window as f64;
    let mut out = Vec::with_capacity(x.len() - first);
    out.push(value);
    for &v in &x[first + 1..] {
        value = (v - value) * k + value;
        out.push(value);
    }
    out
}

/// TA-Lib's zero test (`TA_IS_ZERO`).
fn is_zero(v: f64) -> bool {
    -1e-8 < v && v < 1e-8
}

/// RSI values; the first belongs to index `window`. Same operations, in the same order, as
/// TA-Lib's TA_RSI without unstable period.
fn rsi_values(x: &[f64], window: usize) -> Vec<f64> {
    if window == 0 || x.len() <= window {
        return Vec::new();
    }
    let n = window as f64;
    let ratio = |gain: f64, loss: f64| {
        let total = gain + loss;
        if is_zero(total) {
            0.0
        } else {
            100.0 * (gain / total)
        }
    };
    // A move's (gain, loss), both non-negative.
    let split = |pair: &[f64]| {
        let change = pair[1] - pair[0];
        if change < 0.0 {
            (0.0, -change)
        } else {
            (change, 0.0)
        }
    };
    let (mut gain, mut loss) = x[..=window]
        .windows(2)
        .map(split)
        .fold((0.0_f64, 0.0_f64), |(g, l), (up, down)| (g + up, l + down));
    gain /= n;
    loss /= n;
    let mut out = Vec::with_capacity(x.len() - window);
    out.push(ratio(gain, loss));
    for (up, down) in x[window..].windows(2).map(split) {
        gain = (gain * (n - 1.0) + up) / n;
        loss = (loss * (n - 1.0) + down) / n;
        out.push(ratio(gain, loss));
    }
    out
}

/// Population standard deviation over each window; the first value belongs to `window - 1`.
/// Rolling Welford update, recomputed exactly (two passes) every `window` rows, so the cost stays
/// O(n) and the error bounded by one window's worth of updates.
fn population_std_values(x: &[f64], window: usize) -> Vec<f64> {
    if window == 0 || x.len() < window {
        return Vec::new();
    }
    let n = window as f64;
    let exact = |w: &[f64]| {
        let mean = w.iter().sum::<f64>() / n;
        let m2 = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
        (mean, m2)
    };
    let mut out = Vec::with_capacity(x.len() + 1 - window);
    let (mut mean, mut m2) = (0.0, 0.0);
    // Rows left until the next exact recomputation; 0 means "now".
    let mut until_sync = 0;
    for end in window - 1..x.len() {
        let row = end + 1 - window;
        if until_sync == 0 {
            (mean, m2) = exact(&x[row..=end]);
            until_sync = window;
        } else {
            let (incoming, outgoing) = (x[end], x[row - 1]);
            let old_mean = mean;
            mean += (incoming - outgoing) / n;
            m2 += (incoming - outgoing) * (incoming - mean + outgoing - old_mean);
        }
        until_sync -= 1;
        out.push((m2 / n).max(0.0).sqrt());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_on_a_tiny_series() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(sma_values(&x, 2), vec![1.5, 2.5, 3.5, 4.5]);
        assert_eq!(sma_values(&x, 5), vec![3.0]);
        assert!(sma_values(&x, 6).is_empty());
        assert_eq!(ema_values(&x, 1, 0), x.to_vec());
        // k = 0.5, seed (1 + 2 + 3) / 3 = 2.
        assert_eq!(ema_values(&x, 3, 2), vec![2.0, 3.0, 4.0]);
        assert_eq!(rsi_values(&x, 2), vec![100.0, 100.0, 100.0]);
        assert_eq!(rsi_values(&[5.0, 4.0, 3.0], 1), vec![0.0, 0.0]);
        assert_eq!(rsi_values(&[1.0, 1.0, 1.0], 2), vec![0.0]);
        let std = population_std_values(&x, 2);
        assert_eq!(std, vec![0.5; 4]);
    }

    #[test]
    fn rolling_std_matches_two_pass() {
        let x: Vec<f64> = (0..500)
            .map(|i| 100.0 + ((i * 7919) % 113) as f64 * 0.37 - (i as f64) * 0.01)
            .collect();
        for window in [1, 2, 3, 7, 20, 64] {
            let rolling = population_std_values(&x, window);
            for (row, got) in rolling.iter().enumerate() {
                let w = &x[row..row + window];
                let mean = w.iter().sum::<f64>() / window as f64;
                let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / window as f64;
                assert!((got - var.sqrt()).abs() < 1e-9, "window {window} row {row}");
            }
        }
    }
}
