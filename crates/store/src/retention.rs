//! Bounded storage: old ticks and dead letters are deleted in small batches, each its own short
//! statement, so that ingestion (which writes the newest rows) never waits behind a long delete.
//!
//! Ticks are deleted only where their minute bar exists. [`Store::ingest`] rolls every new tick
//! into its minute bar in the same transaction, so the bars never need the ticks again; the
//! check keeps ticks stored before minute bars existed (or under a stock's former name), which a
//! later roll-up could still want. Ticks are found through their primary key `(stock_id, ts)`,
//! one stock at a time, so no extra index slows ingestion down. The statements are the
//! [`FeedRepo`](crate::feed::FeedRepo)'s of each engine.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The newest dead letters; the limit is appended as a literal.
pub(crate) const NEWEST_DEAD: &str =
    "SELECT source, payload, reason FROM dead_letters ORDER BY id DESC LIMIT";

impl Store {
    /// Deletes at most `limit` of one stock's ticks older than `before` whose minute bar (under
    /// `name`) exists, oldest first; returns how many went.
    pub async fn delete_ticks_before(
        &self,
        stock_id: Uuid,
        name: &str,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let batch = Purge { before, limit };
        self.feed.delete_ticks(stock_id, name, batch).await
    }

    /// Deletes at most `limit` dead letters received before `before` or older than the newest
    /// `keep_rows`, oldest first; returns how many went.
    pub async fn delete_dead_letters(
        &self,
        before: DateTime<Utc>,
        keep_rows: u64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep_rows).unwrap_or(i64::MAX);
        let batch = Purge { before, limit };
        self.feed.delete_dead_letters(batch, keep).await
    }

    /// The newest `limit` dead letters, for inspection.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.feed.dead_letters(limit).await
    }
}

/// One short delete: rows older than `before`, at most `limit` of them.
#[derive(Debug, Clone, Copy)]
pub struct Purge {
    pub before: DateTime<Utc>,
    pub limit: u32,
}

/// A dead letter as stored, newest first from [`Store::dead_letters`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    pub source: String,
    pub payload: Vec<u8>,
    /// `reason: detail`, the reason being the label of `bourse_ticks_rejected_total`.
    pub reason: String,
}

/// The columns of [`NEWEST_DEAD`].
pub(crate) type DeadLetterRow = (String, Vec<u8>, String);

impl From<DeadLetterRow> for StoredDeadLetter {
    fn from((source, payload, reason): DeadLetterRow) -> Self {
        StoredDeadLetter {
            source,
            payload,
            reason,
        }
    }
}
