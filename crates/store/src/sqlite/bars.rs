//! [`BarRepo`] on SQLite: multi-row upserts on the single writer; minute bars are merged in Rust
//! because decimal TEXT does not compare as numbers.

use super::{micros, Sqlite};
use crate::bars::{self, BarRange, BarRepo, Durability, ResampleQuery, ResampledRows, SeriesBar};
use crate::row::Columns;
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::rollup::{roll_up as minute_bars, MinuteRollup};
use bourse_domain::{Bar, Tick};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::SqliteConnection;
use std::collections::HashSet;
use std::sync::OnceLock;

/// Rows per multi-row INSERT: 7 parameters each, well under SQLite's 32,766.
const CHUNK: usize = 1000;

fn insert_sql(rows: usize) -> String {
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

fn full_chunk_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| insert_sql(CHUNK))
}

#[async_trait]
impl BarRepo for Sqlite {
    async fn import(&self, bars: &[Bar], _: Durability) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        for chunk in bars.chunks(CHUNK) {
            let owned;
            let sql = if chunk.len() == CHUNK {
                full_chunk_sql()
            } else {
                owned = insert_sql(chunk.len());
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

    /// Every commit is as durable as `synchronous` makes it: nothing is deferred.
    async fn flush_deferred(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn range(&self, q: BarRange<'_>) -> Result<Vec<SeriesBar>, StoreError> {
        let mut series = Vec::new();
        let mut rows = sqlx::query(
            "SELECT ts, open, high, low, close, volume FROM bars \
             WHERE symbol = ? AND ts >= ? AND ts <= ? ORDER BY ts LIMIT ?",
        )
        .bind(q.symbol)
        .bind(micros(q.from))
        .bind(micros(q.to))
        .bind(q.limit)
        .fetch(&self.read);
        while let Some(r) = rows.try_next().await? {
            series.push(bars::series_bar(&r)?);
        }
        Ok(series)
    }

    async fn has_bars(&self, symbol: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM bars WHERE symbol = ? LIMIT 1")
            .bind(symbol)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_some())
    }

    async fn bars_empty(&self) -> Result<bool, StoreError> {
        let any = sqlx::query("SELECT 1 FROM bars LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        Ok(any.is_none())
    }

    /// Resampling stays in Rust: TEXT prices do not aggregate as numbers.
    async fn resample(&self, _: ResampleQuery<'_>) -> Result<Option<ResampledRows>, StoreError> {
        Ok(None)
    }
}

/// Folds the new ticks of an ingest batch into their 1-minute bars, inside the caller's
/// transaction: read the stored minute bar, merge in Rust ([`MinuteRollup::merge`]),
/// write it back. Safe because SQLite writes are serialised on one connection and this runs in
/// the caller's transaction.
pub(super) async fn roll_up(conn: &mut SqliteConnection, ticks: &[Tick]) -> Result<(), StoreError> {
    for new in minute_bars(ticks) {
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
                    open: r.decimal(0)?,
                    open_at: r.opt_instant(5)?,
                    high: r.decimal(1)?,
                    low: r.decimal(2)?,
                    close: r.decimal(3)?,
                    close_at: r.opt_instant(6)?,
                    volume: r.int(4)?,
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

    #[test]
    fn statement_shape() {
        let sql = insert_sql(2);
        assert!(sql.contains("VALUES (?,?,?,?,?,?,?),(?,?,?,?,?,?,?) ON CONFLICT"));
        assert_eq!(full_chunk_sql().matches('?').count(), 7 * CHUNK);
    }
}
