//! [`BarRepo`] on PostgreSQL: imports through `COPY` ([`super::copy`]), resampling in SQL
//! ([`super::resample`]), and the live roll-up of ticks written as one array upsert.

use super::{copy, resample, Pg};
use crate::bars::{self, BarRange, BarRepo, Durability, ResampleQuery, ResampledRows, SeriesBar};
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::rollup::{roll_up as minute_bars, MinuteRollup};
use bourse_domain::{Bar, Tick};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::PgConnection;

#[async_trait]
impl BarRepo for Pg {
    async fn import(&self, bars: &[Bar], durability: Durability) -> Result<u64, StoreError> {
        // COPY refuses a key twice, like any insert: the last row of a key is kept.
        let unique = bars::last_per_key(bars);
        let data = copy::copy_binary(&unique)?;
        match copy::copy_batch(&self.pool, &data, durability, false).await {
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                // Some keys are stored already (a re-import, an overlapping file, the live
                // roll-up): the first attempt is rolled back, and the batch is upserted instead.
                copy::copy_batch(&self.pool, &data, durability, true).await?;
            }
            other => other?,
        }
        Ok(unique.len() as u64)
    }

    async fn flush_deferred(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT txid_current()")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn range(&self, q: BarRange<'_>) -> Result<Vec<SeriesBar>, StoreError> {
        let mut out = Vec::new();
        let mut rows = sqlx::query(
            "SELECT ts, open, high, low, close, volume FROM bars \
             WHERE symbol = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts LIMIT $4",
        )
        .bind(q.symbol)
        .bind(q.from)
        .bind(q.to)
        .bind(q.limit)
        .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            out.push(bars::series_bar(&r)?);
        }
        Ok(out)
    }

    async fn has_bars(&self, symbol: &str) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM bars WHERE symbol = $1 LIMIT 1")
            .bind(symbol)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn bars_empty(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM bars LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_none())
    }

    async fn resample(&self, q: ResampleQuery<'_>) -> Result<Option<ResampledRows>, StoreError> {
        resample::resample(&self.pool, q).await
    }
}

/// Folds the new ticks of an ingest batch into their 1-minute bars (PostgreSQL), inside the
/// caller's transaction. The merge rules are [`MinuteRollup::merge`]'s, written in SQL so that
/// concurrent ingestors (replicas) upsert atomically; rows are written in `(symbol, minute)`
/// order so that they lock in the same order and cannot deadlock.
pub(super) async fn roll_up(conn: &mut PgConnection, ticks: &[Tick]) -> Result<(), StoreError> {
    let bars = minute_bars(ticks);
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
