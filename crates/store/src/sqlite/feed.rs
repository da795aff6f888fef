//! [`FeedRepo`] on SQLite: row by row on the single writer connection, which already serialises
//! every write.

use super::{micros, Sqlite};
use crate::feed::{
    self, FeedRepo, IngestBatch, IngestOutcome, Span, StockDetail, StockRow, TickRow,
};
use crate::retention::{DeadLetterRow, Purge, StoredDeadLetter};
use crate::row::Columns;
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::{Analysis, NewAnalysis};
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

/// A stock's ticks older than `?2` whose minute bar exists (under the stock's name, `?3`), oldest
/// first, at most `?4`. Instants are microseconds (the minute is rounded down for any sign).
const DELETE_TICKS: &str = "DELETE FROM ticks WHERE stock_id = ?1 AND ts IN ( \
     SELECT t.ts FROM ticks t WHERE t.stock_id = ?1 AND t.ts < ?2 AND EXISTS ( \
       SELECT 1 FROM bars b WHERE b.symbol = ?3 \
         AND b.ts = t.ts - ((t.ts % 60000000) + 60000000) % 60000000) \
     ORDER BY t.ts LIMIT ?4)";

/// Dead letters received before `?1`, or beyond the newest `?3` (by id), oldest first, at most
/// `?2`.
const DELETE_DEAD: &str = "DELETE FROM dead_letters WHERE id IN ( \
     SELECT id FROM dead_letters WHERE received_at < ?1 \
       OR id <= (SELECT max(id) FROM dead_letters) - ?3 ORDER BY id LIMIT ?2)";

#[async_trait]
impl FeedRepo for Sqlite {
    async fn ingest(&self, batch: IngestBatch<'_>) -> Result<IngestOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut outcome = IngestOutcome::default();
        let received = micros(batch.received_at);
        for t in batch.ticks {
            let done = sqlx::query(
                "INSERT OR IGNORE INTO ticks (stock_id, ts, price, availability, received_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(t.stock_id.to_string())
            .bind(micros(t.timestamp))
            .bind(t.price.to_string())
            .bind(t.availability)
            .bind(received)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                outcome.new_ticks.push(t);
            }
        }
        super::bars::roll_up(&mut tx, &outcome.new_ticks).await?;
        let summary = feed::summarize(&outcome.new_ticks);
        let mut pending = Vec::new();
        for (id, s) in &summary {
            let t = s.latest;
            sqlx::query(
                "INSERT INTO stocks (stock_id, name, price, availability, price_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (stock_id) DO UPDATE SET name = excluded.name, price = excluded.price, \
                   availability = excluded.availability, price_at = excluded.price_at, updated_at = excluded.updated_at \
                 WHERE stocks.price_at <= excluded.price_at",
            )
            .bind(id.to_string())
            .bind(&t.name)
            .bind(t.price.to_string())
            .bind(t.availability)
            .bind(micros(t.timestamp))
            .bind(received)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(
                "SELECT target, kind FROM analyses WHERE stock_id = ? AND target_hit = 0",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                let kind = feed::kind_of(r.try_get(1)?)?;
                let analysis = Analysis {
                    target: r.decimal(0)?,
                    kind,
                    target_hit: false,
                };
                pending.push((*id, analysis));
            }
        }
        outcome.hits = feed::judge(&pending, &summary);
        for hit in &outcome.hits {
            sqlx::query(
                "UPDATE analyses SET target_hit = 1, hit_price = ?, hit_at = ? WHERE stock_id = ?",
            )
            .bind(hit.price.to_string())
            .bind(micros(hit.timestamp))
            .bind(hit.stock_id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        for d in batch.dead {
            sqlx::query("INSERT INTO dead_letters (source, payload, reason, received_at) VALUES (?, ?, ?, ?)")
                .bind(&d.source)
                .bind(&d.payload)
                .bind(&d.reason)
                .bind(micros(d.received_at))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn list_stocks(&self) -> Result<Vec<StockRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT stock_id, name, price, availability, price_at FROM stocks ORDER BY name, stock_id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(feed::stock).collect()
    }

    async fn get_stock(&self, id: Uuid) -> Result<Option<StockDetail>, StoreError> {
        let sql = format!("{} WHERE s.stock_id = ?", feed::DETAIL_SELECT);
        let found = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        found.as_ref().map(feed::detail).transpose()
    }

    async fn list_stocks_with_analysis(&self) -> Result<Vec<StockDetail>, StoreError> {
        let sql = format!("{} ORDER BY s.name, s.stock_id", feed::DETAIL_SELECT);
        let all = sqlx::query(&sql).fetch_all(&self.read).await?;
        all.iter().map(feed::detail).collect()
    }

    async fn set_analysis(
        &self,
        id: Uuid,
        new: NewAnalysis,
    ) -> Result<Option<Analysis>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT price, price_at FROM stocks WHERE stock_id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let price = row.decimal(0)?;
        let price_at: i64 = row.try_get(1)?;
        let analysis = new.evaluate(Some(price));
        sqlx::query(
            "INSERT INTO analyses (stock_id, target, kind, target_hit, hit_price, hit_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (stock_id) DO UPDATE SET target = excluded.target, kind = excluded.kind, \
               target_hit = excluded.target_hit, hit_price = excluded.hit_price, hit_at = excluded.hit_at, \
               created_at = excluded.created_at",
        )
        .bind(id.to_string())
        .bind(analysis.target.to_string())
        .bind(analysis.kind.as_str())
        .bind(i64::from(analysis.target_hit))
        .bind(analysis.target_hit.then(|| price.to_string()))
        .bind(analysis.target_hit.then_some(price_at))
        .bind(micros(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(analysis))
    }

    async fn ticks(&self, id: Uuid, span: Span, limit: u32) -> Result<Vec<TickRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT price, availability, ts FROM ticks WHERE stock_id = ? \
             AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?",
        )
        .bind(id.to_string())
        .bind(span.from.map_or(i64::MIN, micros))
        .bind(span.to.map_or(i64::MAX, micros))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(feed::tick).collect()
    }

    async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(&self.read)
            .await?;
        Ok(count)
    }

    async fn delete_ticks(&self, id: Uuid, name: &str, batch: Purge) -> Result<u64, StoreError> {
        let deleted = sqlx::query(DELETE_TICKS)
            .bind(id.to_string())
            .bind(micros(batch.before))
            .bind(name)
            .bind(i64::from(batch.limit))
            .execute(&self.write)
            .await?;
        Ok(deleted.rows_affected())
    }

    async fn delete_dead_letters(&self, batch: Purge, keep: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(DELETE_DEAD)
            .bind(micros(batch.before))
            .bind(i64::from(batch.limit))
            .bind(keep)
            .execute(&self.write)
            .await?;
        Ok(deleted.rows_affected())
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let sql = format!("{} {limit}", crate::retention::NEWEST_DEAD);
        let letters: Vec<DeadLetterRow> = sqlx::query_as(&sql).fetch_all(&self.read).await?;
        Ok(letters.into_iter().map(StoredDeadLetter::from).collect())
    }
}
