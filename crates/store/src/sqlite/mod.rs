//! The SQLite implementation of every repository (the embedded default), in SQLite's dialect.
//!
//! SQLite allows one writer at a time: all writes go through a single connection so that they
//! queue in-process instead of failing with SQLITE_BUSY; reads use their own pool. SQLite has no
//! decimal or timestamp type: decimals are TEXT and instants INTEGER microseconds.

mod bars;
mod feed;
mod orders;
mod outbox;
mod quotes;
mod users;

use crate::row::{native_columns, Columns};
use crate::{ConnectOptions, Database, SqliteSync, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub(crate) struct Sqlite {
    read: SqlitePool,
    write: SqlitePool,
}

/// How a transaction on the writer begins: taking the write lock at once, so that a writer in
/// another process makes it wait (`busy_timeout`) instead of failing with "database is locked"
/// when a transaction that has already read tries to write.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

impl Sqlite {
    pub(crate) async fn connect(url: &str, opts: &ConnectOptions) -> Result<Sqlite, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match opts.sqlite_synchronous {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.clamp(1, 8))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options.read_only(false))
            .await?;
        Ok(Sqlite { read, write })
    }

    /// A write transaction on the single writer connection.
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.write.begin_with(BEGIN_WRITE).await?)
    }
}

#[async_trait]
impl Database for Sqlite {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.write)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("instant {us} out of range")))
}

fn decimal(text: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(text).map_err(|_| StoreError::Corrupt(format!("decimal {text:?}")))
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn uuid(&self, i: usize) -> Result<Uuid, StoreError> {
        let text: &str = self.try_get(i)?;
        Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("uuid {text:?}")))
    }
    fn decimal(&self, i: usize) -> Result<Decimal, StoreError> {
        decimal(self.try_get(i)?)
    }
    fn opt_decimal(&self, i: usize) -> Result<Option<Decimal>, StoreError> {
        self.try_get::<Option<&str>, _>(i)?.map(decimal).transpose()
    }
    fn instant(&self, i: usize) -> Result<DateTime<Utc>, StoreError> {
        from_micros(self.try_get(i)?)
    }
    fn opt_instant(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.try_get::<Option<i64>, _>(i)?
            .map(from_micros)
            .transpose()
    }
    native_columns!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` of the connection that commits every write: 2 is FULL, 1 NORMAL.
    async fn synchronous(sync: SqliteSync) -> i64 {
        let file = crate::testing::TestDb::sqlite();
        let opts = ConnectOptions {
            sqlite_synchronous: sync,
            ..ConnectOptions::default()
        };
        let db = Sqlite::connect(&file.url, &opts).await.unwrap();
        let level = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&db.write)
            .await
            .unwrap();
        db.close().await;
        level
    }

    #[tokio::test]
    async fn sqlite_commits_are_synced_unless_told_otherwise() {
        assert_eq!(synchronous(SqliteSync::default()).await, 2);
        assert_eq!(synchronous(SqliteSync::Normal).await, 1);
    }
}
