//! [`QuoteRepo`] on PostgreSQL: a batch is one array insert.

use super::Pg;
use crate::quotes::{self, HistoryEntry, HistoryPage, QuoteRecord, QuoteRepo};
use crate::StoreError;
use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

#[async_trait]
impl QuoteRepo for Pg {
    async fn record_quotes(&self, batch: &[(Uuid, QuoteRecord)]) -> Result<(), StoreError> {
        let decimals = |f: fn(&QuoteRecord) -> Decimal| -> Vec<Decimal> {
            batch.iter().map(|(_, r)| f(r)).collect()
        };
        let texts = |f: fn(&QuoteRecord) -> &str| -> Vec<&str> {
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
        .bind(texts(|r| &r.code))
        .bind(texts(|r| &r.symbol))
        .bind(texts(|r| &r.name))
        .bind(decimals(|r| r.open))
        .bind(decimals(|r| r.high))
        .bind(decimals(|r| r.low))
        .bind(decimals(|r| r.close))
        .bind(
            batch
                .iter()
                .map(|(_, r)| r.requested_at)
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn history(&self, page: HistoryPage) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = format!(
            "SELECT {} FROM quote_history WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            quotes::COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(page.user)
            .bind(page.before)
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(quotes::entry).collect()
    }

    async fn top_requested(&self, n: u32) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = format!("{} $1", quotes::TOP);
        let rows = sqlx::query(&sql)
            .bind(i64::from(n))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(quotes::top).collect()
    }
}
