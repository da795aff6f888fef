//! The PostgreSQL implementation of every repository (production), in PostgreSQL's dialect:
//! native uuid, numeric and timestamptz columns, arrays through `UNNEST`, `COPY`, row locks.

mod bars;
mod copy;
mod feed;
mod orders;
mod outbox;
mod quotes;
mod resample;
mod users;

use crate::row::{native_columns, Columns};
use crate::{ConnectOptions, Database, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub(crate) struct Pg {
    pool: PgPool,
}

impl Pg {
    pub(crate) async fn connect(url: &str, opts: &ConnectOptions) -> Result<Pg, StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Pg { pool })
    }
}

#[async_trait]
impl Database for Pg {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await
    }
}

impl Columns for sqlx::postgres::PgRow {
    fn uuid(&self, i: usize) -> Result<Uuid, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn decimal(&self, i: usize) -> Result<Decimal, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn opt_decimal(&self, i: usize) -> Result<Option<Decimal>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn instant(&self, i: usize) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn opt_instant(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(i)?)
    }
    native_columns!();
}
