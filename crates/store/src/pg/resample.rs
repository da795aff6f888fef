//! Resampling pushed down into PostgreSQL (see [`Store::resample_in_database`]).
//!
//! [`Store::resample_in_database`]: crate::Store::resample_in_database

use crate::bars::{self, nominal_seconds, PushDown, ResampleQuery, ResampledRows};
use crate::bars::{MAX_BINS, PUSH_DOWN_MIN_BARS_PER_BIN};
use crate::StoreError;
use bourse_domain::resample::bins;
use bourse_domain::{Bin, Frequency, ResampledBar};
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use sqlx::PgPool;

/// The bins of `q` aggregated in SQL, or `None` when the Rust path should resample.
pub(super) async fn resample(
    pool: &PgPool,
    q: ResampleQuery<'_>,
) -> Result<Option<ResampledRows>, StoreError> {
    let (symbol, from, mut to, spec) = (q.symbol, q.from, q.to, q.spec);
    // The first, second and last bar of the range: three index probes in one round trip.
    type Found = Option<DateTime<Utc>>;
    let (first, second, last): (Found, Found, Found) = sqlx::query_as(
        "SELECT (SELECT ts FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 \
                 ORDER BY ts LIMIT 1), \
                (SELECT ts FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 \
                 ORDER BY ts LIMIT 1 OFFSET 1), \
                (SELECT ts FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 \
                 ORDER BY ts DESC LIMIT 1)",
    )
    .bind(symbol)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let (Some(first), Some(mut last)) = (first, last) else {
        return Ok(Some(ResampledRows {
            rows: Vec::new(),
            more: false,
        }));
    };
    if q.when == PushDown::WhenCoarse {
        // The spacing of the first two bars stands for the series' (daily or minute bars).
        let spacing = match second {
            Some(second) => (second - first).num_seconds().max(1),
            None => return Ok(None),
        };
        let bin = nominal_seconds(spec.frequency) * i64::from(spec.interval.get());
        if bin / spacing < PUSH_DOWN_MIN_BARS_PER_BIN {
            return Ok(None);
        }
    }
    let mut anchor = q.anchor.unwrap_or(first);
    let mut more = false;
    // One page: the bins from the first bar's, the range cut at their end.
    if let Some(window) = q.bins.and_then(|n| spec.window(anchor, first, n)) {
        anchor = window.start;
        if let Some(end) = window.end.filter(|&end| last >= end) {
            more = true;
            to = to.min(end - TimeDelta::microseconds(1));
            last = to;
        }
    }
    let rows = match bins(spec, anchor, last, MAX_BINS) {
        Some(bins) => {
            let starts: Vec<DateTime<Utc>> = bins.iter().map(|b| b.start).collect();
            let ends: Vec<Option<DateTime<Utc>>> = bins.iter().map(|b| b.end).collect();
            sqlx::query(BINNED)
                .bind(symbol)
                .bind(from)
                .bind(to)
                .bind(starts)
                .bind(ends)
                .fetch_all(pool)
                .await?
        }
        None => {
            let Some(&Bin { start: anchor, .. }) = bins(spec, anchor, anchor, 1)
                .as_ref()
                .and_then(|b| b.first())
            else {
                return Ok(Some(ResampledRows {
                    rows: Vec::new(),
                    more: false,
                }));
            };
            let n = i64::from(spec.interval.get());
            let (bucket, months) = match spec.frequency {
                Frequency::Minute => (
                    "date_bin(make_interval(mins => ($5::int8)::int), ts, $4)",
                    0,
                ),
                Frequency::Hourly => (
                    "date_bin(make_interval(hours => ($5::int8)::int), ts, $4)",
                    0,
                ),
                Frequency::Daily => (
                    "date_bin(make_interval(days => ($5::int8)::int), ts, $4)",
                    0,
                ),
                Frequency::Weekly => (
                    "date_bin(make_interval(weeks => ($5::int8)::int), ts, $4)",
                    0,
                ),
                Frequency::Monthly => (MONTH_BUCKET, 1),
                Frequency::Quarterly => (MONTH_BUCKET, 3),
                Frequency::Annual => (MONTH_BUCKET, 12),
            };
            let stride = if months == 0 { n } else { n * months };
            let anchor_month = i64::from(anchor.year()) * 12 + i64::from(anchor.month0());
            let sql = GROUPED.replace("{bucket}", bucket);
            let mut query = sqlx::query(&sql)
                .bind(symbol)
                .bind(from)
                .bind(to)
                .bind(anchor)
                .bind(stride);
            if months > 0 {
                query = query.bind(anchor_month);
            }
            query.fetch_all(pool).await?
        }
    };
    let rows = rows
        .iter()
        .map(|r| bars::series_bar(r).map(ResampledBar::from))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(ResampledRows { rows, more }))
}

/// Resampling by bins (`$4` their starts, `$5` their exclusive ends, NULL for unbounded), each an
/// index range scan within `$2..=$3`. The open probe comes first: a bin without a bar yields no
/// row there, and its close and aggregate are never computed.
const BINNED: &str = "SELECT b.start, o.open, a.high, a.low, c.close, \
            LEAST(a.volume, 9223372036854775807)::int8 \
     FROM unnest($4::timestamptz[], $5::timestamptz[]) AS b(start, stop) \
     CROSS JOIN LATERAL (SELECT open FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 \
         AND ts >= b.start AND ts < COALESCE(b.stop, 'infinity') ORDER BY ts LIMIT 1) o \
     CROSS JOIN LATERAL (SELECT close FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 \
         AND ts >= b.start AND ts < COALESCE(b.stop, 'infinity') ORDER BY ts DESC LIMIT 1) c \
     CROSS JOIN LATERAL (SELECT max(high) AS high, min(low) AS low, sum(volume) AS volume \
         FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 \
         AND ts >= b.start AND ts < COALESCE(b.stop, 'infinity')) a \
     ORDER BY b.start";

/// Resampling by a computed bin (`{bucket}`, see [`MONTH_BUCKET`]) for ranges of many bins. Open
/// and close are fetched by primary key at each group's first and last instant through `LIMIT 1`
/// subqueries: as plain joins, the planner (which cannot guess how few groups there are) chose
/// hash joins that read the whole table twice.
const GROUPED: &str = "WITH g AS ( \
       SELECT {bucket} AS bucket, min(ts) AS first_ts, max(ts) AS last_ts, \
              max(high) AS high, min(low) AS low, sum(volume) AS volume \
       FROM bars WHERE symbol = $1 AND ts >= $2 AND ts <= $3 GROUP BY 1) \
     SELECT g.bucket, o.open, g.high, g.low, c.close, \
            LEAST(g.volume, 9223372036854775807)::int8 \
     FROM g CROSS JOIN LATERAL (SELECT open FROM bars \
                                WHERE symbol = $1 AND ts = g.first_ts LIMIT 1) o \
            CROSS JOIN LATERAL (SELECT close FROM bars \
                                WHERE symbol = $1 AND ts = g.last_ts LIMIT 1) c \
     ORDER BY g.bucket";

/// Calendar bins of `$5` months anchored at `$4` (whose month index, year * 12 + month - 1, is
/// `$6`), in UTC.
const MONTH_BUCKET: &str = "(($4::timestamptz AT TIME ZONE 'UTC') + make_interval(months => \
     (((extract(year FROM ts AT TIME ZONE 'UTC')::int8 * 12 \
        + extract(month FROM ts AT TIME ZONE 'UTC')::int8 - 1 - $6::int8) / $5::int8) * $5::int8)::int)) \
     AT TIME ZONE 'UTC'";
