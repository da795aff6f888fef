//! OHLCV bars: bulk import (upsert by `(symbol, ts)`), range reads for the time-series and
//! indicator endpoints, an optional SQL push-down of resampling on PostgreSQL, and the roll-up of
//! live ticks into 1-minute bars that [`Store::ingest`] runs inside its own transaction.
//!
//! Prices stay exact: NUMERIC on PostgreSQL, decimal TEXT on SQLite (which is why SQLite merges
//! minute bars in Rust: TEXT does not compare as numbers).

use crate::sqlite_codec::{decimal, from_micros, micros};
use crate::{Db, Store, StoreError};
use bourse_domain::resample::bins;
use bourse_domain::rollup::{roll_up, MinuteRollup};
use bourse_domain::{Bar, Bin, Frequency, Resample, ResampledBar, Tick};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::encode::IsNull;
use sqlx::postgres::{PgArgumentBuffer, PgRow};
use sqlx::{PgConnection, Postgres, Row, SqliteConnection};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// One stored bar of a series whose symbol the caller already knows (no per-row copy of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesBar {
    pub time: DateTime<Utc>,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: i64,
}

bourse_domain::impl_ohlcv!(SeriesBar, time);

/// Rows per multi-row INSERT on SQLite: 7 parameters each, well under SQLite's 32,766.
const SQLITE_CHUNK: usize = 1000;

/// The widest range PostgreSQL's `timestamptz` and SQLite's microseconds both hold comfortably;
/// open bounds are bound as these so that the same prepared statement (and its index range scan)
/// serves every request.
fn lower_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn upper_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Keeps the last of several bars with the same `(symbol, time)` (a later row of a file wins, as
/// it would row by row), sorted by `(symbol, time)`: PostgreSQL refuses to upsert one row twice
/// in a statement, and a fixed order means concurrent writers lock rows in the same order.
fn last_per_key(bars: &[Bar]) -> Vec<&Bar> {
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

fn sqlite_insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(120 + rows * 18);
    sql.push_str("INSERT INTO bars (symbol, ts, open, high, low, close, volume) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?)");
    }
    sql.push_str(
        " ON CONFLICT (symbol, ts) DO UPDATE SET open = excluded.open, high = excluded.high, \
         low = excluded.low, close = excluded.close, volume = excluded.volume, \
         open_at = NULL, close_at = NULL",
    );
    sql
}

fn sqlite_full_chunk_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| sqlite_insert_sql(SQLITE_CHUNK))
}

/// PostgreSQL import of a batch, first choice: `COPY` straight into `bars`. It is the cheapest
/// way in (no per-row statement or conflict check beyond the primary key's own), and it succeeds
/// whenever every key of the batch is new, as on a first import. A key that already exists makes
/// it fail with a unique violation, and the whole batch goes through [`PG_STAGING`] instead.
const PG_COPY_INTO_BARS: &str =
    "COPY bars (symbol, ts, open, high, low, close, volume) FROM STDIN (FORMAT binary)";

/// Second choice, for batches with stored keys: the batch is copied into a temporary table that
/// lives for the transaction only (no state left on a pooled connection), then upserted from it.
const PG_STAGING: &str = "CREATE TEMP TABLE bars_import (symbol text, ts timestamptz, \
     open numeric, high numeric, low numeric, close numeric, volume int8) ON COMMIT DROP";

const PG_COPY_INTO_STAGING: &str = "COPY bars_import FROM STDIN (FORMAT binary)";

/// The upsert from the staging table: an imported bar replaces the stored one (and forgets the
/// tick times of a live minute bar); unchanged rows are not rewritten. `ON CONFLICT` rather than
/// MERGE because it stays correct when a concurrent writer (the live roll-up, another import)
/// inserts one of these keys meanwhile, and because MERGE's join with a staging table that has no
/// statistics may be planned as a hash join over the whole of `bars`
/// (docs/decisions/0003-bar-import-upsert.md). `ORDER BY` locks rows in key order, as every
/// writer does, so that two of them cannot deadlock.
const PG_UPSERT_STAGED: &str = "INSERT INTO bars (symbol, ts, open, high, low, close, volume) \
     SELECT symbol, ts, open, high, low, close, volume FROM bars_import ORDER BY symbol, ts \
     ON CONFLICT (symbol, ts) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, \
       low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume, \
       open_at = NULL, close_at = NULL \
     WHERE (bars.open, bars.high, bars.low, bars.close, bars.volume, bars.open_at, bars.close_at) \
       IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, \
                         EXCLUDED.volume, NULL::timestamptz, NULL::timestamptz)";

/// Appends one field of a binary `COPY` row: its length, then the value as sqlx encodes it for a
/// bind parameter (PostgreSQL's binary send format, the same one `COPY … (FORMAT binary)` reads).
fn copy_field<'q, T>(buf: &mut PgArgumentBuffer, value: &'q T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'q, Postgres>,
{
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let null = value
        .encode_by_ref(buf)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
    let len = match null {
        // No column of `bars` is written as NULL, but a NULL is -1 with no bytes.
        IsNull::Yes => {
            buf.truncate(at + 4);
            -1
        }
        IsNull::No => i32::try_from(buf.len() - at - 4)
            .map_err(|_| StoreError::Database(sqlx::Error::Encode("field too long".into())))?,
    };
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A batch as the data of `COPY … FROM STDIN (FORMAT binary)`: signature, flags and header
/// extension length, then per row its field count and fields, then the -1 trailer. Binary rather
/// than text so that the server does not parse timestamps and decimals from text.
fn copy_binary(bars: &[&Bar]) -> Result<Vec<u8>, StoreError> {
    let mut buf = PgArgumentBuffer::default();
    buf.reserve(19 + 2 + bars.len() * 96);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for b in bars {
        buf.extend_from_slice(&7i16.to_be_bytes());
        copy_field(&mut buf, &b.symbol.as_str())?;
        copy_field(&mut buf, &b.time)?;
        copy_field(&mut buf, &b.open)?;
        copy_field(&mut buf, &b.high)?;
        copy_field(&mut buf, &b.low)?;
        copy_field(&mut buf, &b.close)?;
        copy_field(&mut buf, &b.volume)?;
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(std::mem::take(&mut *buf))
}

/// Writes one batch (`data` from [`copy_binary`]) in a transaction of its own: straight into
/// `bars`, or through the staging table and the upsert.
async fn pg_copy_batch(
    pool: &sqlx::PgPool,
    data: &[u8],
    durability: Durability,
    staged: bool,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if durability == Durability::Deferred {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    if staged {
        sqlx::query(PG_STAGING).execute(&mut *tx).await?;
    }
    let statement = if staged {
        PG_COPY_INTO_STAGING
    } else {
        PG_COPY_INTO_BARS
    };
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await?;
    if staged {
        sqlx::query(PG_UPSERT_STAGED).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A PostgreSQL row whose first six columns are time, open, high, low, close and volume.
fn pg_series_bar(r: &PgRow) -> Result<SeriesBar, sqlx::Error> {
    Ok(SeriesBar {
        time: r.try_get(0)?,
        open: r.try_get(1)?,
        high: r.try_get(2)?,
        low: r.try_get(3)?,
        close: r.try_get(4)?,
        volume: r.try_get(5)?,
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

impl Store {
    /// [`Store::import_bars_with`] and [`Durability::Immediate`].
    pub async fn import_bars(&self, bars: &[Bar]) -> Result<u64, StoreError> {
        self.import_bars_with(bars, Durability::Immediate).await
    }

    /// Waits until every commit made so far with [`Durability::Deferred`] is durable: commits a
    /// transaction that has a transaction id synchronously, which flushes the write-ahead log up
    /// to its commit record, and so every earlier commit.
    pub async fn flush_deferred(&self) -> Result<(), StoreError> {
        if let Db::Postgres(pool) = &self.db {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL synchronous_commit = on")
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT txid_current()")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Upserts `bars` by `(symbol, time)` in one transaction: an imported bar replaces whatever
    /// was stored for that key (including a minute bar of live ticks). Returns the number of
    /// distinct keys written.
    ///
    /// PostgreSQL: the batch is sent once in `COPY`'s binary format, straight into the table
    /// when its keys are new (`PG_COPY_INTO_BARS`), else into a staging table and upserted
    /// from there with `INSERT … ON CONFLICT DO UPDATE` (`PG_UPSERT_STAGED`). SQLite: prepared multi-row
    /// `INSERT … VALUES … ON CONFLICT DO UPDATE` statements of 1,000 rows on the single writer.
    pub async fn import_bars_with(
        &self,
        bars: &[Bar],
        durability: Durability,
    ) -> Result<u64, StoreError> {
        if bars.is_empty() {
            return Ok(0);
        }
        match &self.db {
            Db::Postgres(pool) => {
                // COPY refuses a key twice, like any insert: the last row of a key is kept.
                let unique = last_per_key(bars);
                let data = copy_binary(&unique)?;
                match pg_copy_batch(pool, &data, durability, false).await {
                    Err(StoreError::Database(sqlx::Error::Database(e)))
                        if e.is_unique_violation() =>
                    {
                        // Some keys are stored already (a re-import, an overlapping file, the
                        // live roll-up): the first attempt is rolled back, and the batch is
                        // upserted instead.
                        pg_copy_batch(pool, &data, durability, true).await?;
                    }
                    other => other?,
                }
                Ok(unique.len() as u64)
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                for chunk in bars.chunks(SQLITE_CHUNK) {
                    let owned;
                    let sql = if chunk.len() == SQLITE_CHUNK {
                        sqlite_full_chunk_sql()
                    } else {
                        owned = sqlite_insert_sql(chunk.len());
                        owned.as_str()
                    };
                    let mut query = sqlx::query(sql);
                    for b in chunk {
                        query = query
                            .bind(b.symbol.as_str())
                            .bind(micros(b.time))
                            .bind(b.open.to_string())
                            .bind(b.high.to_string())
                            .bind(b.low.to_string())
                            .bind(b.close.to_string())
                            .bind(b.volume);
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                // Counted as documented: a key given twice is written once.
                let keys: HashSet<(&str, DateTime<Utc>)> =
                    bars.iter().map(|b| (b.symbol.as_str(), b.time)).collect();
                Ok(keys.len() as u64)
            }
        }
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
        let from = from.unwrap_or_else(lower_bound);
        let to = to.unwrap_or_else(upper_bound);
        let limit = limit.map_or(i64::MAX, i64::from);
        let mut out = Vec::new();
        match &self.db {
            Db::Postgres(pool) => {
                let mut rows = sqlx::query(
                    "SELECT ts, open, high, low, close, volume FROM bars \
                     WHERE symbol = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts LIMIT $4",
                )
                .bind(symbol)
                .bind(from)
                .bind(to)
                .bind(limit)
                .fetch(pool);
                while let Some(r) = rows.try_next().await? {
                    out.push(pg_series_bar(&r)?);
                }
            }
            Db::Sqlite { read, .. } => {
                let mut rows = sqlx::query(
                    "SELECT ts, open, high, low, close, volume FROM bars \
                     WHERE symbol = ? AND ts >= ? AND ts <= ? ORDER BY ts LIMIT ?",
                )
                .bind(symbol)
                .bind(micros(from))
                .bind(micros(to))
                .bind(limit)
                .fetch(read);
                while let Some(r) = rows.try_next().await? {
                    out.push(SeriesBar {
                        time: from_micros(r.try_get(0)?)?,
                        open: decimal(r.try_get::<&str, _>(1)?)?,
                        high: decimal(r.try_get::<&str, _>(2)?)?,
                        low: decimal(r.try_get::<&str, _>(3)?)?,
                        close: decimal(r.try_get::<&str, _>(4)?)?,
                        volume: r.try_get(5)?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// True when at least one bar of `symbol` is stored (whatever its time): what tells an
    /// unknown symbol (404) from an empty range (200 with no rows).
    pub async fn has_bars(&self, symbol: &str) -> Result<bool, StoreError> {
        let found = match &self.db {
            Db::Postgres(pool) => sqlx::query("SELECT 1 FROM bars WHERE symbol = $1 LIMIT 1")
                .bind(symbol)
                .fetch_optional(pool)
                .await?
                .is_some(),
            Db::Sqlite { read, .. } => sqlx::query("SELECT 1 FROM bars WHERE symbol = ? LIMIT 1")
                .bind(symbol)
                .fetch_optional(read)
                .await?
                .is_some(),
        };
        Ok(found)
    }

    /// True when the bars table holds no row at all (demo seeding fills only an empty table).
    pub async fn bars_empty(&self) -> Result<bool, StoreError> {
        let sql = "SELECT 1 FROM bars LIMIT 1";
        let row = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql).fetch_optional(pool).await?.is_some(),
            Db::Sqlite { read, .. } => sqlx::query(sql).fetch_optional(read).await?.is_some(),
        };
        Ok(!row)
    }

    /// Resampling pushed down into PostgreSQL: the database aggregates the range bin by bin and
    /// returns one row per bin instead of every bar, with exactly the rules of
    /// [`bourse_domain::resample()`] (same bins, same anchoring, empty bins omitted).
    ///
    /// The bins are computed here ([`bourse_domain::resample::bins`]) and sent as two arrays;
    /// each bin is then an index range scan of `(symbol, ts)`: its open and close are the first
    /// and last row of the range, high, low and volume one aggregate over it (`PG_BINNED`). No
    /// per-row calendar arithmetic, no hashing, no plan that depends on guessing the number of
    /// groups. Ranges with more than [`MAX_BINS`] bins (minute bins over years) are grouped by a
    /// computed bin instead (`PG_GROUPED`).
    ///
    /// `None` means "resample in Rust instead": always on SQLite, and with
    /// [`PushDown::WhenCoarse`] when the bins are not much coarser than the bars (see
    /// [`PUSH_DOWN_MIN_BARS_PER_BIN`]).
    ///
    /// With `anchor`, the bins are anchored at its period instead of the first bar's (see
    /// [`bourse_domain::resample_anchored`]): one page of a longer series.
    pub async fn resample_in_database(
        &self,
        symbol: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        spec: Resample,
        when: PushDown,
        anchor: Option<DateTime<Utc>>,
    ) -> Result<Option<Vec<ResampledBar>>, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let from = from.unwrap_or_else(lower_bound);
        let to = to.unwrap_or_else(upper_bound);
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
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Some(Vec::new()));
        };
        if when == PushDown::WhenCoarse {
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
        let anchor = anchor.unwrap_or(first);
        let rows = match bins(spec, anchor, last, MAX_BINS) {
            Some(bins) => {
                let starts: Vec<DateTime<Utc>> = bins.iter().map(|b| b.start).collect();
                let ends: Vec<Option<DateTime<Utc>>> = bins.iter().map(|b| b.end).collect();
                sqlx::query(PG_BINNED)
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
                    return Ok(Some(Vec::new()));
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
                let sql = PG_GROUPED.replace("{bucket}", bucket);
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
        rows.iter()
            .map(|r| {
                pg_series_bar(r).map(|b| ResampledBar {
                    period_start: b.time,
                    open: b.open,
                    high: b.high,
                    low: b.low,
                    close: b.close,
                    volume: b.volume,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map(Some)
            .map_err(StoreError::from)
    }
}

/// More bins than this are grouped by `PG_GROUPED` rather than probed one by one by
/// `PG_BINNED`: each bin costs three index probes, empty or not, so a few thousand cost a few
/// milliseconds, while grouping costs per bar.
pub const MAX_BINS: usize = 5_000;

/// Resampling by bins (`$4` their starts, `$5` their exclusive ends, NULL for unbounded), each an
/// index range scan within `$2..=$3`. The open probe comes first: a bin without a bar yields no
/// row there, and its close and aggregate are never computed.
const PG_BINNED: &str = "SELECT b.start, o.open, a.high, a.low, c.close, \
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
const PG_GROUPED: &str = "WITH g AS ( \
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
fn nominal_seconds(frequency: Frequency) -> i64 {
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

/// Calendar bins of `$5` months anchored at `$4` (whose month index, year * 12 + month - 1, is
/// `$6`), in UTC.
const MONTH_BUCKET: &str = "(($4::timestamptz AT TIME ZONE 'UTC') + make_interval(months => \
     (((extract(year FROM ts AT TIME ZONE 'UTC')::int8 * 12 \
        + extract(month FROM ts AT TIME ZONE 'UTC')::int8 - 1 - $6::int8) / $5::int8) * $5::int8)::int)) \
     AT TIME ZONE 'UTC'";

/// Folds the new ticks of an ingest batch into their 1-minute bars (PostgreSQL), inside the
/// caller's transaction. The merge rules are [`MinuteRollup::merge`]'s, written in SQL so that
/// concurrent ingestors (replicas) upsert atomically; rows are written in `(symbol, minute)`
/// order so that they lock in the same order and cannot deadlock.
pub(crate) async fn roll_up_pg(conn: &mut PgConnection, ticks: &[Tick]) -> Result<(), StoreError> {
    let bars = roll_up(ticks);
    if bars.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&MinuteRollup) -> Decimal| bars.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO bars (symbol, ts, open, high, low, close, volume, open_at, close_at) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::numeric[], $4::numeric[], \
                              $5::numeric[], $6::numeric[], $7::int8[], $8::timestamptz[], $9::timestamptz[]) \
         ON CONFLICT (symbol, ts) DO UPDATE SET \
           open = CASE WHEN EXCLUDED.open_at < bars.open_at THEN EXCLUDED.open ELSE bars.open END, \
           open_at = CASE WHEN EXCLUDED.open_at < bars.open_at THEN EXCLUDED.open_at ELSE bars.open_at END, \
           high = GREATEST(bars.high, EXCLUDED.high), \
           low = LEAST(bars.low, EXCLUDED.low), \
           close = CASE WHEN bars.close_at IS NULL OR EXCLUDED.close_at >= bars.close_at \
                        THEN EXCLUDED.close ELSE bars.close END, \
           close_at = CASE WHEN bars.close_at IS NULL OR EXCLUDED.close_at >= bars.close_at \
                           THEN EXCLUDED.close_at ELSE bars.close_at END, \
           volume = bars.volume + EXCLUDED.volume",
    )
    .bind(bars.iter().map(|b| b.symbol.as_str()).collect::<Vec<_>>())
    .bind(bars.iter().map(|b| b.minute).collect::<Vec<_>>())
    .bind(column(|b| b.open))
    .bind(column(|b| b.high))
    .bind(column(|b| b.low))
    .bind(column(|b| b.close))
    .bind(bars.iter().map(|b| b.volume).collect::<Vec<_>>())
    .bind(bars.iter().map(|b| b.open_at).collect::<Vec<_>>())
    .bind(bars.iter().map(|b| b.close_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The same on SQLite: read the stored minute bar, merge in Rust ([`MinuteRollup::merge`]),
/// write it back. Safe because SQLite writes are serialised on one connection and this runs in
/// the caller's transaction.
pub(crate) async fn roll_up_sqlite(
    conn: &mut SqliteConnection,
    ticks: &[Tick],
) -> Result<(), StoreError> {
    for new in roll_up(ticks) {
        let minute = micros(new.minute);
        let stored = sqlx::query(
            "SELECT open, high, low, close, volume, open_at, close_at FROM bars \
             WHERE symbol = ? AND ts = ?",
        )
        .bind(&new.symbol)
        .bind(minute)
        .fetch_optional(&mut *conn)
        .await?;
        let bar = match stored {
            None => new,
            Some(r) => {
                let mut bar = MinuteRollup {
                    symbol: new.symbol.clone(),
                    minute: new.minute,
                    open: decimal(r.try_get::<&str, _>(0)?)?,
                    open_at: r
                        .try_get::<Option<i64>, _>(5)?
                        .map(from_micros)
                        .transpose()?,
                    high: decimal(r.try_get::<&str, _>(1)?)?,
                    low: decimal(r.try_get::<&str, _>(2)?)?,
                    close: decimal(r.try_get::<&str, _>(3)?)?,
                    close_at: r
                        .try_get::<Option<i64>, _>(6)?
                        .map(from_micros)
                        .transpose()?,
                    volume: r.try_get(4)?,
                };
                bar.merge(&new);
                bar
            }
        };
        sqlx::query(
            "INSERT INTO bars (symbol, ts, open, high, low, close, volume, open_at, close_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (symbol, ts) DO UPDATE SET open = excluded.open, high = excluded.high, \
               low = excluded.low, close = excluded.close, volume = excluded.volume, \
               open_at = excluded.open_at, close_at = excluded.close_at",
        )
        .bind(&bar.symbol)
        .bind(minute)
        .bind(bar.open.to_string())
        .bind(bar.high.to_string())
        .bind(bar.low.to_string())
        .bind(bar.close.to_string())
        .bind(bar.volume)
        .bind(bar.open_at.map(micros))
        .bind(bar.close_at.map(micros))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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

    #[test]
    fn sqlite_statement_shape() {
        let sql = sqlite_insert_sql(2);
        assert!(sql.contains("VALUES (?,?,?,?,?,?,?),(?,?,?,?,?,?,?) ON CONFLICT"));
        assert_eq!(
            sqlite_full_chunk_sql().matches('?').count(),
            7 * SQLITE_CHUNK
        );
    }
}
