//! [`FeedRepo`] on PostgreSQL: a batch is a handful of array statements (`UNNEST`), whatever its
//! size; stock rows are locked in stock id order so that concurrent ingestors cannot deadlock.

use super::Pg;
use crate::feed::{
    self, FeedRepo, IngestBatch, IngestOutcome, Span, StockDetail, StockRow, TickRow,
};
use crate::retention::{DeadLetterRow, Purge, StoredDeadLetter};
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::{Analysis, NewAnalysis, Tick};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

/// A stock's ticks older than `$2` whose minute bar exists (under the stock's name, `$3`), oldest
/// first, at most `$4`. Minutes are UTC (`date_trunc` with a zone).
const DELETE_TICKS: &str = "DELETE FROM ticks WHERE stock_id = $1 AND ts IN ( \
     SELECT t.ts FROM ticks t WHERE t.stock_id = $1 AND t.ts < $2 AND EXISTS ( \
       SELECT 1 FROM bars b WHERE b.symbol = $3 AND b.ts = date_trunc('minute', t.ts, 'UTC')) \
     ORDER BY t.ts LIMIT $4)";

/// Dead letters received before `$1`, or beyond the newest `$3` (by id), oldest first, at most
/// `$2`. Ids grow with arrival, so the scan in id order finds them first.
const DELETE_DEAD: &str = "DELETE FROM dead_letters WHERE id IN ( \
     SELECT id FROM dead_letters WHERE received_at < $1 \
       OR id <= (SELECT max(id) FROM dead_letters) - $3 ORDER BY id LIMIT $2)";

/// Inserts the ticks not stored yet and returns them.
async fn insert_ticks(
    tx: &mut Transaction<'_, Postgres>,
    ticks: Vec<Tick>,
    received_at: DateTime<Utc>,
) -> Result<Vec<Tick>, StoreError> {
    if ticks.is_empty() {
        return Ok(ticks);
    }
    let ids: Vec<Uuid> = ticks.iter().map(|t| t.stock_id).collect();
    let ts: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.timestamp).collect();
    let prices: Vec<Decimal> = ticks.iter().map(|t| t.price).collect();
    let avail: Vec<i64> = ticks.iter().map(|t| t.availability).collect();
    let inserted: HashSet<(Uuid, DateTime<Utc>)> = sqlx::query(
        "INSERT INTO ticks (stock_id, ts, price, availability, received_at) \
         SELECT u.*, $5 FROM UNNEST($1::uuid[], $2::timestamptz[], $3::numeric[], $4::int8[]) AS u \
         ON CONFLICT DO NOTHING RETURNING stock_id, ts",
    )
    .bind(&ids)
    .bind(&ts)
    .bind(&prices)
    .bind(&avail)
    .bind(received_at)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(ticks
        .into_iter()
        .filter(|t| inserted.contains(&(t.stock_id, t.timestamp)))
        .collect())
}

/// Moves each stock's latest price forward and flips the targets the batch reached.
async fn apply_prices(
    tx: &mut Transaction<'_, Postgres>,
    batch: &BTreeMap<Uuid, feed::StockBatch<'_>>,
) -> Result<Vec<feed::TargetHit>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    // Sorted by stock id (BTreeMap) so that concurrent ingestors lock stock rows in the same
    // order and cannot deadlock.
    let latest: Vec<&Tick> = batch.values().map(|s| s.latest).collect();
    sqlx::query(
        "INSERT INTO stocks (stock_id, name, price, availability, price_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::int8[], $5::timestamptz[]) \
         ON CONFLICT (stock_id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, \
           availability = EXCLUDED.availability, price_at = EXCLUDED.price_at, updated_at = now() \
         WHERE stocks.price_at <= EXCLUDED.price_at",
    )
    .bind(latest.iter().map(|t| t.stock_id).collect::<Vec<_>>())
    .bind(latest.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
    .bind(latest.iter().map(|t| t.price).collect::<Vec<_>>())
    .bind(latest.iter().map(|t| t.availability).collect::<Vec<_>>())
    .bind(latest.iter().map(|t| t.timestamp).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    let ids: Vec<Uuid> = batch.keys().copied().collect();
    let pending = sqlx::query(
        "SELECT stock_id, target, kind FROM analyses \
         WHERE stock_id = ANY($1) AND NOT target_hit ORDER BY stock_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| {
        let kind: String = r.try_get(2)?;
        let analysis = Analysis {
            target: r.try_get(1)?,
            kind: feed::kind_of(&kind)?,
            target_hit: false,
        };
        Ok((r.try_get(0)?, analysis))
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    let hits = feed::judge(&pending, batch);
    for hit in &hits {
        sqlx::query(
            "UPDATE analyses SET target_hit = true, hit_price = $2, hit_at = $3 WHERE stock_id = $1",
        )
        .bind(hit.stock_id)
        .bind(hit.price)
        .bind(hit.timestamp)
        .execute(&mut **tx)
        .await?;
    }
    Ok(hits)
}

#[async_trait]
impl FeedRepo for Pg {
    async fn ingest(&self, batch: IngestBatch<'_>) -> Result<IngestOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let new_ticks = insert_ticks(&mut tx, batch.ticks, batch.received_at).await?;
        // Only the ticks stored for the first time count, so a redelivered batch does not count
        // twice; same transaction, so bars and ticks commit together.
        super::bars::roll_up(&mut tx, &new_ticks).await?;
        let hits = apply_prices(&mut tx, &feed::summarize(&new_ticks)).await?;
        if !batch.dead.is_empty() {
            sqlx::query(
                "INSERT INTO dead_letters (source, payload, reason, received_at) \
                 SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::timestamptz[])",
            )
            .bind(
                batch
                    .dead
                    .iter()
                    .map(|d| d.source.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .dead
                    .iter()
                    .map(|d| d.payload.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .dead
                    .iter()
                    .map(|d| d.reason.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(batch.dead.iter().map(|d| d.received_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(IngestOutcome { new_ticks, hits })
    }

    async fn list_stocks(&self) -> Result<Vec<StockRow>, StoreError> {
        sqlx::query(
            "SELECT stock_id, name, price, availability, price_at FROM stocks ORDER BY name, stock_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(feed::stock)
        .collect()
    }

    async fn get_stock(&self, id: Uuid) -> Result<Option<StockDetail>, StoreError> {
        let sql = format!("{} WHERE s.stock_id = $1", feed::DETAIL_SELECT);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(feed::detail).transpose()
    }

    async fn list_stocks_with_analysis(&self) -> Result<Vec<StockDetail>, StoreError> {
        let sql = format!("{} ORDER BY s.name, s.stock_id", feed::DETAIL_SELECT);
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(feed::detail).collect()
    }

    async fn set_analysis(
        &self,
        id: Uuid,
        new: NewAnalysis,
    ) -> Result<Option<Analysis>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) =
            sqlx::query("SELECT price, price_at FROM stocks WHERE stock_id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let price: Decimal = row.try_get(0)?;
        let price_at: DateTime<Utc> = row.try_get(1)?;
        let analysis = new.evaluate(Some(price));
        sqlx::query(
            "INSERT INTO analyses (stock_id, target, kind, target_hit, hit_price, hit_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now()) \
             ON CONFLICT (stock_id) DO UPDATE SET target = EXCLUDED.target, kind = EXCLUDED.kind, \
               target_hit = EXCLUDED.target_hit, hit_price = EXCLUDED.hit_price, hit_at = EXCLUDED.hit_at, \
               created_at = EXCLUDED.created_at",
        )
        .bind(id)
        .bind(analysis.target)
        .bind(analysis.kind.as_str())
        .bind(analysis.target_hit)
        .bind(analysis.target_hit.then_some(price))
        .bind(analysis.target_hit.then_some(price_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(analysis))
    }

    async fn ticks(&self, id: Uuid, span: Span, limit: u32) -> Result<Vec<TickRow>, StoreError> {
        sqlx::query(
            "SELECT price, availability, ts FROM ticks WHERE stock_id = $1 \
             AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts <= $3) \
             ORDER BY ts DESC LIMIT $4",
        )
        .bind(id)
        .bind(span.from)
        .bind(span.to)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(feed::tick)
        .collect()
    }

    async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM dead_letters";
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    async fn delete_ticks(&self, id: Uuid, name: &str, batch: Purge) -> Result<u64, StoreError> {
        let done = sqlx::query(DELETE_TICKS)
            .bind(id)
            .bind(batch.before)
            .bind(name)
            .bind(i64::from(batch.limit))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_dead_letters(&self, batch: Purge, keep: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(DELETE_DEAD)
            .bind(batch.before)
            .bind(i64::from(batch.limit))
            .bind(keep)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let sql = format!("{} {limit}", crate::retention::NEWEST_DEAD);
        let rows: Vec<DeadLetterRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(StoredDeadLetter::from).collect())
    }
}
