//! [`QuoteRepo`] on SQLite: a batch is one transaction of single-row inserts on the writer.

use super::{micros, Sqlite};
use crate::quotes::{self, HistoryEntry, HistoryPage, QuoteRecord, QuoteRepo};
use crate::StoreError;
use async_trait::async_trait;
use uuid::Uuid;

#[async_trait]
impl QuoteRepo for Sqlite {
    async fn record_quotes(&self, batch: &[(Uuid, QuoteRecord)]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for (user, r) in batch {
            sqlx::query(
                "INSERT INTO quote_history \
                   (user_id, code, symbol, name, open, high, low, close, requested_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        Ok(())
    }

    async fn history(&self, page: HistoryPage) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = format!(
            "SELECT {} FROM quote_history WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            quotes::COLUMNS
        );
        let entries = sqlx::query(&sql)
            .bind(page.user.to_string())
            .bind(page.before)
            .bind(i64::from(page.limit))
            .fetch_all(&self.read)
            .await?;
        entries.iter().map(quotes::entry).collect()
    }

    async fn top_requested(&self, n: u32) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = format!("{} ?", quotes::TOP);
        let top = sqlx::query(&sql)
            .bind(i64::from(n))
            .fetch_all(&self.read)
            .await?;
        top.iter().map(quotes::top).collect()
    }
}
