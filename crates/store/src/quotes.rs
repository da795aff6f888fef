//! Quote history (what each user asked for) and the most-requested stocks.

use crate::group_commit::{BatchLimits, GroupCommit};
use crate::sqlite_codec::{decimal, from_micros, micros};
use crate::{Db, Store, StoreError};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;
use uuid::Uuid;

/// One answered quote as it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRecord {
    /// The code as requested, lower case (`aapl.us`): what stats count.
    pub code: String,
    pub symbol: String,
    pub name: String,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Increasing with insertion: the pagination cursor, and the tie-breaker that makes entries
    /// of the same instant come newest-recorded first.
    pub id: i64,
    pub record: QuoteRecord,
}

const COLUMNS: &str = "id, code, symbol, name, open, high, low, close, requested_at";

impl Store {
    /// Records one answered quote in `user`'s history.
    pub async fn record_quote(&self, user: Uuid, r: &QuoteRecord) -> Result<(), StoreError> {
        self.record_quotes(&[(user, r.clone())]).await
    }

    /// Records a batch of answered quotes in one transaction; ids follow the batch's order.
    pub async fn record_quotes(&self, batch: &[(Uuid, QuoteRecord)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.db {
            Db::Postgres(pool) => {
                let column = |f: fn(&QuoteRecord) -> Decimal| -> Vec<Decimal> {
                    batch.iter().map(|(_, r)| f(r)).collect()
                };
                // WITH ORDINALITY + ORDER BY: the ids (the history's order) follow the batch.
                sqlx::query(
                    "INSERT INTO quote_history \
                       (user_id, code, symbol, name, open, high, low, close, requested_at) \
                     SELECT u, c, s, n, o, h, l, cl, t FROM UNNEST($1::uuid[], $2::text[], \
                       $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::numeric[], \
                       $8::numeric[], $9::timestamptz[]) WITH ORDINALITY \
                       AS b(u, c, s, n, o, h, l, cl, t, i) ORDER BY i",
                )
                .bind(batch.iter().map(|(u, _)| *u).collect::<Vec<_>>())
                .bind(
                    batch
                        .iter()
                        .map(|(_, r)| r.code.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    batch
                        .iter()
                        .map(|(_, r)| r.symbol.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    batch
                        .iter()
                        .map(|(_, r)| r.name.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(column(|r| r.open))
                .bind(column(|r| r.high))
                .bind(column(|r| r.low))
                .bind(column(|r| r.close))
                .bind(
                    batch
                        .iter()
                        .map(|(_, r)| r.requested_at)
                        .collect::<Vec<_>>(),
                )
                .execute(pool)
                .await?;
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                for (user, r) in batch {
                    sqlx::query(
                        "INSERT INTO quote_history \
                           (user_id, code, symbol, name, open, high, low, close, requested_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(user.to_string())
                    .bind(&r.code)
                    .bind(&r.symbol)
                    .bind(&r.name)
                    .bind(r.open.to_string())
                    .bind(r.high.to_string())
                    .bind(r.low.to_string())
                    .bind(r.close.to_string())
                    .bind(micros(r.requested_at))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// A group-commit writer for the history (see [`crate::group_commit`]): what `GET /stock`
    /// uses, so that concurrent quotes share transactions.
    pub fn history_writer(&self) -> GroupCommit<(Uuid, QuoteRecord)> {
        let store = self.clone();
        GroupCommit::spawn(BatchLimits::default(), move |batch| {
            let store = store.clone();
            async move { store.record_quotes(&batch).await }
        })
    }

    /// The user's history, newest first, entries older than the cursor `before` (an entry id).
    pub async fn quote_history(
        &self,
        user: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM quote_history WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let before = before.unwrap_or(i64::MAX);
        match &self.db {
            Db::Postgres(pool) => sqlx::query(&sql)
                .bind(user)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(HistoryEntry {
                        id: r.try_get(0)?,
                        record: QuoteRecord {
                            code: r.try_get(1)?,
                            symbol: r.try_get(2)?,
                            name: r.try_get(3)?,
                            open: r.try_get(4)?,
                            high: r.try_get(5)?,
                            low: r.try_get(6)?,
                            close: r.try_get(7)?,
                            requested_at: r.try_get(8)?,
                        },
                    })
                })
                .collect(),
            Db::Sqlite { read, .. } => sqlx::query(&sql)
                .bind(user.to_string())
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(read)
                .await?
                .iter()
                .map(|r| {
                    Ok(HistoryEntry {
                        id: r.try_get(0)?,
                        record: QuoteRecord {
                            code: r.try_get(1)?,
                            symbol: r.try_get(2)?,
                            name: r.try_get(3)?,
                            open: decimal(&r.try_get::<String, _>(4)?)?,
                            high: decimal(&r.try_get::<String, _>(5)?)?,
                            low: decimal(&r.try_get::<String, _>(6)?)?,
                            close: decimal(&r.try_get::<String, _>(7)?)?,
                            requested_at: from_micros(r.try_get(8)?)?,
                        },
                    })
                })
                .collect(),
        }
    }

    /// The `n` most requested codes over all users, most requested first (ties by code).
    pub async fn top_requested(&self, n: u32) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT code, COUNT(*) AS times FROM quote_history GROUP BY code \
                   ORDER BY times DESC, code ASC LIMIT $1";
        let rows = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql).bind(i64::from(n)).fetch_all(pool).await?,
            Db::Sqlite { read, .. } => {
                let rows = sqlx::query(sql).bind(i64::from(n)).fetch_all(read).await?;
                return rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect();
            }
        };
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
