//! Quote history (what each user asked for) and the most-requested stocks.

use crate::group_commit::{BatchLimits, GroupCommit};
use crate::row::Columns;
use crate::{Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
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

/// Entries of `user` with an id below `before`, newest first, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPage {
    pub user: Uuid,
    pub before: i64,
    pub limit: u32,
}

/// The columns of a history entry, in the order [`entry`] decodes them.
pub(crate) const COLUMNS: &str = "id, code, symbol, name, open, high, low, close, requested_at";

/// The most requested codes; the limit is the one parameter.
pub(crate) const TOP: &str = "SELECT code, COUNT(*) AS times FROM quote_history GROUP BY code \
     ORDER BY times DESC, code ASC LIMIT";

/// A row of [`COLUMNS`].
pub(crate) fn entry(r: &impl Columns) -> Result<HistoryEntry, StoreError> {
    Ok(HistoryEntry {
        id: r.int(0)?,
        record: QuoteRecord {
            code: r.text(1)?,
            symbol: r.text(2)?,
            name: r.text(3)?,
            open: r.decimal(4)?,
            high: r.decimal(5)?,
            low: r.decimal(6)?,
            close: r.decimal(7)?,
            requested_at: r.instant(8)?,
        },
    })
}

/// A row of [`TOP`]: a code and how often it was requested.
pub(crate) fn top(r: &impl Columns) -> Result<(String, i64), StoreError> {
    Ok((r.text(0)?, r.int(1)?))
}

/// The quote history's storage, one implementation per engine.
#[async_trait]
pub trait QuoteRepo: Send + Sync {
    /// [`Store::record_quotes`], `batch` not empty.
    async fn record_quotes(&self, batch: &[(Uuid, QuoteRecord)]) -> Result<(), StoreError>;
    async fn history(&self, page: HistoryPage) -> Result<Vec<HistoryEntry>, StoreError>;
    async fn top_requested(&self, n: u32) -> Result<Vec<(String, i64)>, StoreError>;
}

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
        self.quotes.record_quotes(batch).await
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
        let page = HistoryPage {
            user,
            before: before.unwrap_or(i64::MAX),
            limit,
        };
        self.quotes.history(page).await
    }

    /// The `n` most requested codes over all users, most requested first (ties by code).
    pub async fn top_requested(&self, n: u32) -> Result<Vec<(String, i64)>, StoreError> {
        self.quotes.top_requested(n).await
    }
}
