//! Time series and indicators: raw and resampled OHLCV bars, and TA-Lib-exact
//! indicators on them.
//!
//! - `GET /stocks/time-series/{symbol}?frequency&interval&start&end`
//! - `GET /stocks/indicators/{symbol}/{name}?frequency&interval&start&end&<indicator params>`
//!
//! Prices are exact decimals rendered as JSON numbers. Indicator values are `f64` statistics
//! (see `bourse_domain::indicators`) rounded to 6 decimal places, finer than any input price,
//! which keeps binary-float noise (`97.04774849999998`) out of the answers.
//!
//! Indicators are computed on the bars of the requested range only: the first rows of a window
//! start at the window's length into the range, and `vwap` accumulates from the range's start.
//!
//! Resampling runs in Rust on the fetched bars ([`bourse_domain::resample()`]), except on
//! PostgreSQL when each bin holds many bars (minute bars into hours, days, years; daily bars into
//! quarters, years): there the database aggregates them bin by bin, one index range scan each
//! ([`Store::resample_in_database`]), and returns one row per bin instead of every bar
//! (docs/decisions/0002-resampling-push-down.md).
//!
//! Answers are cached per (symbol, query) for a few tens of milliseconds ([`SeriesCache`]).
//!
//! [`Store::resample_in_database`]: bourse_store::Store::resample_in_database
//! [`SeriesCache`]: crate::series_cache::SeriesCache

use crate::extract::{PathParams, QueryParams};
use crate::page::link_next;
use crate::routes::{Ohlc, TimeBound};
use crate::{ApiContext, ApiError};
use axum::body::Bytes;
use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bourse_domain::bar::MAX_SYMBOL_LEN;
use bourse_domain::indicators::{BollingerPoint, IndicatorPoint, MacdPoint};
use bourse_domain::{
    resample, resample_anchored, Frequency, Indicator, IndicatorSeries, Ohlcv, Resample,
    ResampledBar, SeriesKind,
};
use bourse_store::bars::{PushDown, SeriesBar};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/stocks/time-series/{symbol}", get(time_series))
        .route("/stocks/indicators/{symbol}/{name}", get(indicator))
}

/// The range of a series, shared by the time series and the indicators (documentation of the
/// parameters; the time series reads them with [`TimeSeriesQuery`], the indicators by hand).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SeriesQuery {
    /// `Minute`, `Hourly`, `Daily`, `Weekly`, `Monthly`, `Quarterly` or `Annual`; absent: raw bars.
    #[param(pattern = "^(Minute|Hourly|Daily|Weekly|Monthly|Quarterly|Annual)$")]
    frequency: Option<String>,
    /// Bins of this many periods (default 1); needs `frequency`.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    interval: Option<String>,
    /// Inclusive lower bound: `YYYY-MM-DD` or RFC 3339.
    #[param(value_type = Option<TimeBound>)]
    start: Option<String>,
    /// Inclusive upper bound: `YYYY-MM-DD` (the whole day) or RFC 3339.
    #[param(value_type = Option<TimeBound>)]
    end: Option<String>,
}

/// The paging parameters of the time series (documentation; `limit`'s maximum is the setting's,
/// written into the served document by [`crate::openapi`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SeriesPageQuery {
    /// Rows per page (default `BOURSE_PAGE_DEFAULT`, at most `BOURSE_PAGE_MAX`; above: 400).
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Cursor: the rows after this instant (the last row's `date` or `period_start` of the
    /// previous page); the `Link: rel="next"` header carries it.
    #[param(value_type = Option<TimeBound>)]
    after: Option<String>,
}

/// The query of `GET /stocks/time-series/{symbol}` as read. Unknown parameters are refused (400).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSeriesQuery {
    frequency: Option<String>,
    interval: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

/// What to read and how to aggregate it, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SeriesSpec {
    resample: Option<Resample>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl SeriesSpec {
    fn parse(
        frequency: Option<&str>,
        interval: Option<&str>,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<SeriesSpec, ApiError> {
        let resample = match (frequency, interval) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "`interval` needs `frequency` (Minute, Hourly, Daily, Weekly, Monthly, Quarterly or Annual)"
                        .into(),
                ))
            }
            (Some(f), i) => Some(
                Resample::parse(f, i).map_err(|e| ApiError::BadRequest(format!("invalid `{}`: {e}", if matches!(e, bourse_domain::ResampleError::InvalidInterval) { "interval" } else { "frequency" })))?,
            ),
        };
        let start = super::time_bound("start", start.map(str::trim), false)?;
        let end = super::time_bound("end", end.map(str::trim), true)?;
        if let (Some(s), Some(e)) = (start, end) {
            if s > e {
                return Err(ApiError::BadRequest("`start` is after `end`".into()));
            }
        }
        Ok(SeriesSpec {
            resample,
            start,
            end,
        })
    }
}

/// An answer's cache key beside its symbol: what the answer is, and the range it covers.
struct AnswerKey<'a, W> {
    what: W,
    spec: &'a SeriesSpec,
}

impl<W: std::fmt::Debug> std::fmt::Display for AnswerKey<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.spec;
        write!(
            f,
            "{:?}|{:?}|{:?}|{:?}",
            self.what, s.resample, s.start, s.end
        )
    }
}

/// Bars of a symbol, raw or resampled.
enum Series {
    Raw(Vec<SeriesBar>),
    Resampled(Vec<ResampledBar>, Frequency),
}

impl Series {
    fn is_empty(&self) -> bool {
        match self {
            Series::Raw(b) => b.is_empty(),
            Series::Resampled(b, _) => b.is_empty(),
        }
    }
}

fn check_symbol(symbol: &str) -> Result<(), ApiError> {
    // No symbol holds a control character (PostgreSQL's text cannot even hold NUL).
    if symbol.is_empty()
        || symbol.chars().count() > MAX_SYMBOL_LEN
        || symbol.chars().any(char::is_control)
    {
        return Err(unknown_symbol(symbol));
    }
    Ok(())
}

/// The whole series of the range (the indicators').
async fn load(ctx: &ApiContext, symbol: &str, spec: &SeriesSpec) -> Result<Series, ApiError> {
    check_symbol(symbol)?;
    let series = match spec.resample {
        None => Series::Raw(ctx.store.bars(symbol, spec.start, spec.end).await?),
        Some(r) => match ctx
            .store
            .resample_in_database(
                symbol,
                spec.start,
                spec.end,
                r,
                PushDown::WhenCoarse,
                None,
                None,
            )
            .await?
        {
            Some(page) => Series::Resampled(page.rows, r.frequency),
            None => {
                let bars = ctx.store.bars(symbol, spec.start, spec.end).await?;
                Series::Resampled(resample(&bars, r), r.frequency)
            }
        },
    };
    if series.is_empty() && !ctx.store.has_bars(symbol).await? {
        return Err(unknown_symbol(symbol));
    }
    Ok(series)
}

/// One page of the series: at most `limit` rows after `after`, and the next page's cursor when
/// rows remain.
async fn load_page(
    ctx: &ApiContext,
    symbol: &str,
    spec: &SeriesSpec,
    limit: u32,
    after: Option<DateTime<Utc>>,
) -> Result<(Series, Option<DateTime<Utc>>), ApiError> {
    check_symbol(symbol)?;
    let (series, next) = match spec.resample {
        None => {
            // Instants are stored to the microsecond: the next one is the first after `after`.
            let from = after
                .map(|a| a + TimeDelta::microseconds(1))
                .max(spec.start);
            let mut bars = ctx
                .store
                .bars_limited(symbol, from, spec.end, Some(limit.saturating_add(1)))
                .await?;
            let more = bars.len() > limit as usize;
            bars.truncate(limit as usize);
            let next = more.then(|| bars.last().map(|b| b.time)).flatten();
            (Series::Raw(bars), next)
        }
        Some(r) => resampled_page(ctx, symbol, spec, r, limit, after).await?,
    };
    if series.is_empty() && after.is_none() && !ctx.store.has_bars(symbol).await? {
        return Err(unknown_symbol(symbol));
    }
    Ok((series, next))
}

/// A page of a resampled series: `limit` bins of the range's bins (anchored at its first bar's
/// period), from the bin of the first bar after the previous page's last bin. Only the bars of
/// those bins are read. The first page costs what the whole range did before paging: on
/// PostgreSQL one call that finds the range's ends and aggregates the page's bins.
async fn resampled_page(
    ctx: &ApiContext,
    symbol: &str,
    spec: &SeriesSpec,
    r: Resample,
    limit: u32,
    after: Option<DateTime<Utc>>,
) -> Result<(Series, Option<DateTime<Utc>>), ApiError> {
    let empty = (Series::Resampled(Vec::new(), r.frequency), None);
    let first_bar = |from: Option<DateTime<Utc>>| async move {
        let bars = ctx
            .store
            .bars_limited(symbol, from, spec.end, Some(1))
            .await?;
        Ok::<_, ApiError>(bars.first().map(|b| b.time))
    };
    // A later page keeps the series' anchor and starts at the bin after the previous page's last.
    let (anchor, from) = match after {
        None => (None, spec.start),
        Some(a) => {
            let Some(anchor) = first_bar(spec.start).await? else {
                return Ok(empty);
            };
            match r.window(anchor, a, 1).and_then(|w| w.end) {
                Some(end) => (Some(anchor), Some(end.max(anchor))),
                None => return Ok(empty),
            }
        }
    };
    if let Some(page) = ctx
        .store
        .resample_in_database(
            symbol,
            from,
            spec.end,
            r,
            PushDown::WhenCoarse,
            anchor,
            Some(limit),
        )
        .await?
    {
        let next = page.more.then(|| page.rows.last().map(|b| b.period_start));
        return Ok((Series::Resampled(page.rows, r.frequency), next.flatten()));
    }
    // In Rust, on the bars of the page's bins.
    let Some(first) = first_bar(from).await? else {
        return Ok(empty);
    };
    let Some(window) = r.window(anchor.unwrap_or(first), first, limit) else {
        return Ok(empty);
    };
    let to = match (window.end, spec.end) {
        (Some(w), Some(e)) => Some((w - TimeDelta::microseconds(1)).min(e)),
        (Some(w), None) => Some(w - TimeDelta::microseconds(1)),
        (None, e) => e,
    };
    let bars = ctx
        .store
        .bars(symbol, Some(window.start.max(first)), to)
        .await?;
    let rows = resample_anchored(&bars, r, window.start);
    let more = match window.end {
        Some(end) => first_bar(Some(end)).await?.is_some(),
        None => false,
    };
    let next = more.then(|| rows.last().map(|b| b.period_start)).flatten();
    Ok((Series::Resampled(rows, r.frequency), next))
}

fn unknown_symbol(symbol: &str) -> ApiError {
    let shown: String = symbol.chars().take(40).collect();
    ApiError::NotFound(format!("unknown symbol {shown:?}"))
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// One row of a time series: `date` for raw bars (`YYYY-MM-DD` for daily bars, RFC 3339 for
/// intraday ones), `period_start` for resampled ones.
#[derive(Serialize, ToSchema)]
pub struct TimeSeriesRow<'a> {
    #[schema(example = "AMZN")]
    symbol: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2019-06-28")]
    date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(null))]
    period_start: Option<String>,
    #[serde(flatten)]
    prices: Ohlc,
    volume: i64,
}

fn row<'a, B: Ohlcv>(
    symbol: &'a str,
    bar: &B,
    kind: SeriesKind,
    resampled: bool,
) -> TimeSeriesRow<'a> {
    let time = kind.format_time(bar.time());
    let (date, period_start) = if resampled {
        (None, Some(time))
    } else {
        (Some(time), None)
    };
    TimeSeriesRow {
        symbol,
        date,
        period_start,
        prices: Ohlc {
            open: bar.open(),
            high: bar.high(),
            low: bar.low(),
            close: bar.close(),
        },
        volume: bar.volume(),
    }
}

fn render_series(symbol: &str, series: &Series) -> Result<Bytes, ApiError> {
    let rows: Vec<TimeSeriesRow<'_>> = match series {
        Series::Raw(bars) => {
            let kind = SeriesKind::of_bars(bars);
            bars.iter().map(|b| row(symbol, b, kind, false)).collect()
        }
        Series::Resampled(bars, frequency) => {
            let kind = frequency.series_kind();
            bars.iter().map(|b| row(symbol, b, kind, true)).collect()
        }
    };
    to_bytes(&rows)
}

/// OHLCV bars of a symbol, raw (`date`) or resampled (`period_start`), oldest first.
///
/// Resampling: open of the first bar, highest high, lowest low, close of the last bar, summed
/// volume; periods without bars are omitted; a period starts on its first day (weeks on Monday);
/// bins of `interval` periods are anchored at the period holding the first bar of the range.
///
/// Paged: at most `limit` rows; when rows remain, `Link: <…&after=…>; rel="next"` names the next
/// page (the same query, the cursor moved past this page's last row).
#[utoipa::path(get, path = "/stocks/time-series/{symbol}", tag = "time series",
    params(("symbol" = String, Path, description = "symbol or stock name, e.g. AMZN or Hamada Inc"),
        SeriesQuery, SeriesPageQuery),
    responses(
        (status = 200, body = [TimeSeriesRow], headers(("Link" = String,
            description = "`<…>; rel=\"next\"` when rows remain"))),
        (status = 400, description = "unknown parameter, bad value, `interval` without `frequency`, a `limit` over the maximum"),
        (status = 404, description = "no bar of this symbol")))]
pub async fn time_series(
    State(ctx): State<ApiContext>,
    OriginalUri(uri): OriginalUri,
    PathParams(symbol): PathParams<String>,
    QueryParams(q): QueryParams<TimeSeriesQuery>,
) -> Result<Response, ApiError> {
    let spec = SeriesSpec::parse(
        q.frequency.as_deref(),
        q.interval.as_deref(),
        q.start.as_deref(),
        q.end.as_deref(),
    )?;
    let limit = ctx.paging.limit(q.limit)?;
    let after = super::time_bound("after", q.after.as_deref().map(str::trim), false)?;
    let key = AnswerKey {
        what: ("series", limit, after),
        spec: &spec,
    };
    let cached = ctx
        .series
        .get_or_load(&symbol, key, || async {
            let (series, next) = load_page(&ctx, &symbol, &spec, limit, after).await?;
            Ok(with_cursor(next, render_series(&symbol, &series)?))
        })
        .await?;
    let (next, body) = split_cursor(cached);
    let mut response = json_response(body);
    if let Some(next) = next {
        let mut query: Vec<(&str, String)> = Vec::new();
        for (key, value) in [("frequency", &q.frequency), ("interval", &q.interval)]
            .into_iter()
            .chain([("start", &q.start), ("end", &q.end)])
        {
            if let Some(v) = value {
                query.push((key, v.clone()));
            }
        }
        query.push(("limit", limit.to_string()));
        query.push(("after", next));
        link_next(&mut response, uri.path(), &query);
    }
    Ok(response)
}

/// A cached page is the next page's cursor (empty when none), a newline, then the JSON body.
fn with_cursor(next: Option<DateTime<Utc>>, body: Bytes) -> Bytes {
    let cursor = next.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
    let mut out = Vec::with_capacity(body.len() + 40);
    out.extend_from_slice(cursor.unwrap_or_default().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&body);
    Bytes::from(out)
}

fn split_cursor(cached: Bytes) -> (Option<String>, Bytes) {
    let at = cached.iter().position(|&b| b == b'\n').unwrap_or(0);
    let cursor = match std::str::from_utf8(&cached[..at]) {
        Ok(c) if !c.is_empty() => Some(c.to_owned()),
        _ => None,
    };
    (cursor, cached.slice((at + 1).min(cached.len())..))
}

/// One indicator row. `date` (raw series) or `period_start` (resampled), then `value`, or the
/// named fields of `macd` (`macd`, `signal`, `histogram`) and `bollinger` (`upper`, `middle`,
/// `lower`). Values are rounded to 6 decimal places.
#[derive(Serialize, ToSchema, Default)]
pub struct IndicatorRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2019-07-01")]
    date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(null))]
    period_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 95.3955)]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    macd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    histogram: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upper: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    middle: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lower: Option<f64>,
}

/// Indicator values are statistics, not money: rounded to 6 decimal places for display.
fn round6(v: f64) -> f64 {
    if !v.is_finite() {
        return v;
    }
    let r = (v * 1e6).round() / 1e6;
    // Beyond ~9e9 the scaled value loses precision; such values need no rounding anyway.
    if r.is_finite() && (r - v).abs() <= 1e-6 {
        r
    } else {
        v
    }
}

fn stamp(time: DateTime<Utc>, kind: SeriesKind, resampled: bool) -> IndicatorRow {
    let t = kind.format_time(time);
    if resampled {
        IndicatorRow {
            period_start: Some(t),
            ..IndicatorRow::default()
        }
    } else {
        IndicatorRow {
            date: Some(t),
            ..IndicatorRow::default()
        }
    }
}

fn render_indicator(
    values: &IndicatorSeries,
    kind: SeriesKind,
    resampled: bool,
) -> Result<Bytes, ApiError> {
    let rows: Vec<IndicatorRow> = match values {
        IndicatorSeries::Values(points) => points
            .iter()
            .map(|p: &IndicatorPoint| IndicatorRow {
                value: Some(round6(p.value)),
                ..stamp(p.time, kind, resampled)
            })
            .collect(),
        IndicatorSeries::Macd(points) => points
            .iter()
            .map(|p: &MacdPoint| IndicatorRow {
                macd: Some(round6(p.macd)),
                signal: Some(round6(p.signal)),
                histogram: Some(round6(p.histogram)),
                ..stamp(p.time, kind, resampled)
            })
            .collect(),
        IndicatorSeries::Bollinger(points) => points
            .iter()
            .map(|p: &BollingerPoint| IndicatorRow {
                upper: Some(round6(p.upper)),
                middle: Some(round6(p.middle)),
                lower: Some(round6(p.lower)),
                ..stamp(p.time, kind, resampled)
            })
            .collect(),
    };
    to_bytes(&rows)
}

/// The series parameters; every other query parameter belongs to the indicator.
const SERIES_PARAMS: [&str; 4] = ["frequency", "interval", "start", "end"];

/// A technical indicator on the closing prices of a symbol's (optionally resampled) series.
///
/// `sma?window` (20), `ema?window` (20), `rsi?window` (14, Wilder), `macd?fast&slow&signal`
/// (12/26/9), `bollinger?window&k` (20, 2; population standard deviation), `vwap` (typical price
/// weighted by volume, cumulative over the range). Conventions match TA-Lib; leading rows
/// without enough history are omitted. Also takes `frequency`, `interval`, `start`, `end` as the
/// time series does.
#[utoipa::path(get, path = "/stocks/indicators/{symbol}/{name}", tag = "time series",
    params(
        ("symbol" = String, Path, description = "symbol or stock name"),
        ("name" = String, Path, description = "sma, ema, rsi, macd, bollinger or vwap"),
        SeriesQuery,
        ("window" = Option<u32>, Query, description = "sma, ema, rsi, bollinger"),
        ("fast" = Option<u32>, Query, description = "macd"),
        ("slow" = Option<u32>, Query, description = "macd"),
        ("signal" = Option<u32>, Query, description = "macd"),
        ("k" = Option<f64>, Query, description = "bollinger: number of standard deviations")),
    responses(
        (status = 200, body = [IndicatorRow]),
        (status = 400, description = "unknown parameter or bad value"),
        (status = 404, description = "unknown indicator or symbol")))]
pub async fn indicator(
    State(ctx): State<ApiContext>,
    PathParams((symbol, name)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let mut series: [Option<&str>; 4] = [None; 4];
    let mut own: Vec<(&str, &str)> = Vec::new();
    for (key, value) in &pairs {
        match SERIES_PARAMS.iter().position(|p| p == key) {
            Some(i) => {
                if series[i].replace(value.as_str()).is_some() {
                    return Err(ApiError::BadRequest(format!(
                        "parameter `{key}` is given more than once"
                    )));
                }
            }
            None => own.push((key.as_str(), value.as_str())),
        }
    }
    let indicator = Indicator::from_query(&name, own).map_err(|e| {
        if e.is_unknown_indicator() {
            ApiError::NotFound(e.to_string())
        } else {
            ApiError::BadRequest(e.to_string())
        }
    })?;
    let spec = SeriesSpec::parse(series[0], series[1], series[2], series[3])?;
    let key = AnswerKey {
        what: ("indicator", indicator),
        spec: &spec,
    };
    let body = ctx
        .series
        .get_or_load(&symbol, key, || async {
            let loaded = load(&ctx, &symbol, &spec).await?;
            let (values, kind, resampled) = match &loaded {
                Series::Raw(bars) => (indicator.compute(bars), SeriesKind::of_bars(bars), false),
                Series::Resampled(bars, f) => (indicator.compute(bars), f.series_kind(), true),
            };
            let values = values.map_err(|e| ApiError::BadRequest(e.to_string()))?;
            render_indicator(&values, kind, resampled)
        })
        .await?;
    Ok(json_response(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        f: Option<&str>,
        i: Option<&str>,
        s: Option<&str>,
        e: Option<&str>,
    ) -> Result<SeriesSpec, String> {
        SeriesSpec::parse(f, i, s, e).map_err(|e| e.to_string())
    }

    #[test]
    fn series_parameters() {
        let spec = parse(
            Some("Monthly"),
            Some("3"),
            Some("2020-01-01"),
            Some("2020-12-31"),
        )
        .unwrap();
        assert_eq!(
            spec.resample,
            Some(Resample::new(Frequency::Monthly, 3).unwrap())
        );
        assert_eq!(
            spec.start.unwrap().to_rfc3339(),
            "2020-01-01T00:00:00+00:00"
        );
        assert_eq!(
            spec.end.unwrap().to_rfc3339(),
            "2020-12-31T23:59:59.999999+00:00"
        );
        let spec = parse(None, None, Some("2020-01-01T10:00:00+02:00"), None).unwrap();
        assert_eq!(
            spec.start.unwrap().to_rfc3339(),
            "2020-01-01T08:00:00+00:00"
        );
        assert_eq!(
            parse(Some("Weekly"), None, None, None).unwrap().resample,
            Some(Resample::every(Frequency::Weekly))
        );

        assert!(parse(None, Some("1"), None, None)
            .unwrap_err()
            .contains("needs `frequency`"));
        assert!(parse(Some("monthly"), None, None, None)
            .unwrap_err()
            .contains("invalid `frequency`"));
        assert!(parse(Some("Monthly"), Some("0"), None, None)
            .unwrap_err()
            .contains("invalid `interval`"));
        assert!(parse(Some("Monthly"), Some("x"), None, None).is_err());
        assert!(parse(None, None, Some("yesterday"), None)
            .unwrap_err()
            .contains("invalid `start`"));
        assert!(parse(None, None, Some("2021-01-01"), Some("2020-01-01"))
            .unwrap_err()
            .contains("after"));
    }

    #[test]
    fn rounding() {
        assert_eq!(round6(97.04774849999998), 97.047748);
        assert_eq!(round6(95.3955), 95.3955);
        assert_eq!(round6(-2.567609227769168), -2.567609);
        assert_eq!(round6(1e300), 1e300);
        assert!(round6(f64::NAN).is_nan());
    }
}
