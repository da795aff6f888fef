//! Bounded storage: old ticks and dead letters are deleted in small batches, each its own short
//! statement, so that ingestion (which writes the newest rows) never waits behind a long delete.
//!
//! Ticks are deleted only where their minute bar exists. [`Store::ingest`] rolls every new tick
//! into its minute bar in the same transaction, so the bars never need the ticks again; the
//! check keeps ticks stored before minute bars existed (or under a stock's former name), which a
//! later roll-up could still want. Ticks are found through their primary key `(stock_id, ts)`,
//! one stock at a time, so no extra index slows ingestion down.

use crate::sqlite_codec::micros;
use crate::{Db, Store, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A stock's ticks older than `$2` whose minute bar exists (under the stock's name, `$3`), oldest
/// first, at most `$4`. Minutes are UTC (`date_trunc` with a zone).
const PG_TICKS: &str = "DELETE FROM ticks WHERE stock_id = $1 AND ts IN ( \
     SELECT t.ts FROM ticks t WHERE t.stock_id = $1 AND t.ts < $2 AND EXISTS ( \
       SELECT 1 FROM bars b WHERE b.symbol = $3 AND b.ts = date_trunc('minute', t.ts, 'UTC')) \
     ORDER BY t.ts LIMIT $4)";

/// The same on SQLite, where instants are microseconds (the minute is rounded down for any sign).
const SQLITE_TICKS: &str = "DELETE FROM ticks WHERE stock_id = ?1 AND ts IN ( \
     SELECT t.ts FROM ticks t WHERE t.stock_id = ?1 AND t.ts < ?2 AND EXISTS ( \
       SELECT 1 FROM bars b WHERE b.symbol = ?3 \
         AND b.ts = t.ts - ((t.ts % 60000000) + 60000000) % 60000000) \
     ORDER BY t.ts LIMIT ?4)";

/// Dead letters received before `$1`, or beyond the newest `$3` (by id), oldest first, at most
/// `$2`. Ids grow with arrival, so the scan in id order finds them first.
const PG_DEAD: &str = "DELETE FROM dead_letters WHERE id IN ( \
     SELECT id FROM dead_letters WHERE received_at < $1 \
       OR id <= (SELECT max(id) FROM dead_letters) - $3 ORDER BY id LIMIT $2)";

const SQLITE_DEAD: &str = "DELETE FROM dead_letters WHERE id IN ( \
     SELECT id FROM dead_letters WHERE received_at < ?1 \
       OR id <= (SELECT max(id) FROM dead_letters) - ?3 ORDER BY id LIMIT ?2)";

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
        let done = match &self.db {
            Db::Postgres(pool) => sqlx::query(PG_TICKS)
                .bind(stock_id)
                .bind(before)
                .bind(name)
                .bind(i64::from(limit))
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite { write, .. } => sqlx::query(SQLITE_TICKS)
                .bind(stock_id.to_string())
                .bind(micros(before))
                .bind(name)
                .bind(i64::from(limit))
                .execute(write)
                .await?
                .rows_affected(),
        };
        Ok(done)
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
        let done = match &self.db {
            Db::Postgres(pool) => sqlx::query(PG_DEAD)
                .bind(before)
                .bind(i64::from(limit))
                .bind(keep)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite { write, .. } => sqlx::query(SQLITE_DEAD)
                .bind(micros(before))
                .bind(i64::from(limit))
                .bind(keep)
                .execute(write)
                .await?
                .rows_affected(),
        };
        Ok(done)
    }
}

/// A dead letter as stored, newest first from [`Store::dead_letters`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    pub source: String,
    pub payload: Vec<u8>,
    /// `reason: detail`, the reason being the label of `bourse_ticks_rejected_total`.
    pub reason: String,
}

impl Store {
    /// The newest `limit` dead letters, for inspection.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let sql = "SELECT source, payload, reason FROM dead_letters ORDER BY id DESC LIMIT ";
        let sql = format!("{sql}{limit}");
        let row = |r: (String, Vec<u8>, String)| StoredDeadLetter {
            source: r.0,
            payload: r.1,
            reason: r.2,
        };
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_as(&sql).fetch_all(pool).await?,
            Db::Sqlite { read, .. } => sqlx::query_as(&sql).fetch_all(read).await?,
        }
        .into_iter()
        .map(row)
        .collect())
    }
}
