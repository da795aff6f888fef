//! Storage for bourse over PostgreSQL (production) and SQLite (embedded default).
//!
//! One [`Store`] value hides which engine is behind it: each repository method matches on the
//! engine and runs SQL written for it. The two schemas carry the same data; SQLite keeps decimals
//! as TEXT and instants as INTEGER microseconds so that both stay exact and ordered.
//!
//! Repositories by resource: [`feed`] (stocks, ticks, analyses, dead letters), [`orders`]
//! (orders, outbox, events, idempotency keys), [`bars`] (import, roll-up, resampling in SQL),
//! quote history, users and API keys. Errors are [`StoreError`]; `testing` (feature `testing`)
//! makes throw-away databases for tests.
//!
//! ```no_run
//! # async fn example() -> Result<(), bourse_store::StoreError> {
//! use bourse_store::{ConnectOptions, Store};
//!
//! let store = Store::connect("sqlite://bourse.db", &ConnectOptions::default()).await?;
//! store.migrate().await?;
//! for stock in store.list_stocks().await? {
//!     println!("{} {} ({} available)", stock.name, stock.price, stock.availability);
//! }
//! # Ok(()) }
//! ```

pub mod bars;
pub mod credentials;
mod error;
pub mod feed;
pub mod group_commit;
pub mod orders;
pub mod quotes;
pub mod retention;
mod sqlite_codec;
pub mod users;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::StoreError;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Which engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    pub fn of_url(url: &str) -> Result<Engine, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else {
            Err(StoreError::InvalidUrl(
                "database URL must start with postgres:// or sqlite:".into(),
            ))
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Postgres(PgPool),
    /// SQLite allows one writer at a time: all writes go through a single connection so that
    /// they queue in-process instead of failing with SQLITE_BUSY; reads use their own pool.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
}

/// Connection settings that matter in production.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub sqlite_synchronous: SqliteSync,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sqlite_synchronous: SqliteSync::default(),
        }
    }
}

/// How a transaction on the SQLite writer begins: taking the write lock at once, so that a writer
/// in another process makes it wait (`busy_timeout`) instead of failing with "database is locked"
/// when a transaction that has already read tries to write.
pub(crate) const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// When a SQLite commit reaches the disk (`PRAGMA synchronous`; the journal is WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// The WAL is synced at every commit: an answered write (a 201 order, a new user or key)
    /// survives a power cut.
    #[default]
    Full,
    /// The WAL is synced at checkpoints only: a power cut can lose the last commits (the file
    /// stays consistent). A process crash loses nothing either way.
    Normal,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://path`, `sqlite:///abs/path`; a missing
    /// SQLite file is created).
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Store, StoreError> {
        match Engine::of_url(url)? {
            Engine::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_with(options)
                    .await?;
                Ok(Store {
                    db: Db::Postgres(pool),
                })
            }
            Engine::Sqlite => {
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
                Ok(Store {
                    db: Db::Sqlite { read, write },
                })
            }
        }
    }

    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Postgres(_) => Engine::Postgres,
            Db::Sqlite { .. } => Engine::Sqlite,
        }
    }

    /// Applies the migrations of this engine that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
            Db::Sqlite { write, .. } => sqlx::migrate!("./migrations/sqlite").run(write).await?,
        }
        Ok(())
    }

    /// Cheap round trip used by health and readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Db::Sqlite { read, .. } => {
                sqlx::query("SELECT 1").execute(read).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` of the connection that commits every write: 2 is FULL, 1 NORMAL.
    async fn synchronous(sync: SqliteSync) -> i64 {
        let db = testing::TestDb::sqlite();
        let opts = ConnectOptions {
            sqlite_synchronous: sync,
            ..ConnectOptions::default()
        };
        let store = Store::connect(&db.url, &opts).await.unwrap();
        let Db::Sqlite { write, .. } = &store.db else {
            unreachable!("a SQLite URL")
        };
        let level = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(write)
            .await
            .unwrap();
        store.close().await;
        level
    }

    #[tokio::test]
    async fn sqlite_commits_are_synced_unless_told_otherwise() {
        assert_eq!(synchronous(SqliteSync::default()).await, 2);
        assert_eq!(synchronous(SqliteSync::Normal).await, 1);
    }
}
