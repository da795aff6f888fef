//! Storage for bourse over PostgreSQL (production) and SQLite (embedded default).
//!
//! One [`Store`] value hides which engine is behind it. Each aggregate has a repository trait,
//! declared next to the types it returns: [`feed::FeedRepo`] (stocks, ticks, analyses, dead
//! letters and their retention), [`orders::OrderRepo`] (orders, their events and idempotency keys),
//! [`outbox::OutboxRepo`] (the relays' side: claims, outcomes, event publishing),
//! [`bars::BarRepo`] (import, range reads, resampling in SQL), [`quotes::QuoteRepo`] (quote
//! history) and [`users::UserRepo`] (users, API keys, credential changes). Each trait has two
//! implementations, one per engine, in the private modules `pg` and `sqlite`, every file in one
//! SQL dialect. The engine is chosen once, in [`Store::connect`]; the store's methods forward to
//! the chosen implementations through `dyn` traits (docs/decisions/0007). Row mappers are written
//! once against a small decoding trait (`row::Columns`): SQLite keeps decimals as TEXT and
//! instants as INTEGER microseconds so that both stay exact and ordered.
//!
//! Errors are [`StoreError`]; `testing` (feature `testing`) makes throw-away databases for tests.
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
pub mod outbox;
mod pg;
pub mod quotes;
pub mod retention;
mod row;
mod sqlite;
pub mod users;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::StoreError;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

/// What concerns the database as a whole rather than one aggregate.
#[async_trait]
pub(crate) trait Database: Send + Sync {
    /// Applies the migrations of this engine that are not applied yet.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// A cheap round trip.
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
}

/// The storage of bourse: cheap to clone (each repository is one shared pointer).
#[derive(Clone)]
pub struct Store {
    engine: Engine,
    db: Arc<dyn Database>,
    pub(crate) feed: Arc<dyn feed::FeedRepo>,
    pub(crate) orders: Arc<dyn orders::OrderRepo>,
    pub(crate) outbox: Arc<dyn outbox::OutboxRepo>,
    pub(crate) bars: Arc<dyn bars::BarRepo>,
    pub(crate) quotes: Arc<dyn quotes::QuoteRepo>,
    pub(crate) users: Arc<dyn users::UserRepo>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .finish()
    }
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
    /// SQLite file is created). The one place that chooses the engine.
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Store, StoreError> {
        let engine = Engine::of_url(url)?;
        Ok(match engine {
            Engine::Postgres => Store::over(engine, pg::Pg::connect(url, opts).await?),
            Engine::Sqlite => Store::over(engine, sqlite::Sqlite::connect(url, opts).await?),
        })
    }

    /// Splits one engine's implementation into the repositories.
    fn over<B>(engine: Engine, backend: B) -> Store
    where
        B: Database + feed::FeedRepo + orders::OrderRepo + bars::BarRepo + 'static,
        B: outbox::OutboxRepo + quotes::QuoteRepo + users::UserRepo,
    {
        let backend = Arc::new(backend);
        Store {
            engine,
            db: backend.clone(),
            feed: backend.clone(),
            orders: backend.clone(),
            outbox: backend.clone(),
            bars: backend.clone(),
            quotes: backend.clone(),
            users: backend,
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies the migrations of this engine that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    /// Cheap round trip used by health and readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    pub async fn close(&self) {
        self.db.close().await
    }
}
