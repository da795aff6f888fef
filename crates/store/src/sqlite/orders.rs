//! [`OrderRepo`] on SQLite: a new order is one write transaction on the single writer, which
//! also makes the idempotency check and the insert atomic.

use super::{micros, Sqlite};
use crate::orders::{self, Creation, Intake, Order, OrderEvent, OrderQuery, OrderRepo};
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::order::events;
use sqlx::Row;
use uuid::Uuid;

#[async_trait]
impl OrderRepo for Sqlite {
    async fn create_order(&self, new: Intake<'_>) -> Result<Creation, StoreError> {
        let o = &new.order;
        let (id, user) = (o.id.to_string(), o.user_id.to_string());
        let mut tx = self.begin_write().await?;
        if let Some(key) = new.idempotency_key {
            let found = sqlx::query(
                "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = ? AND key = ?",
            )
            .bind(&user)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = found {
                let stored: &str = row.try_get(0)?;
                if stored != new.fingerprint {
                    return Err(orders::key_conflict());
                }
                let sql = format!("SELECT {} FROM orders WHERE id = ?", orders::COLUMNS);
                let first = sqlx::query(&sql)
                    .bind(row.try_get::<&str, _>(1)?)
                    .fetch_one(&mut *tx)
                    .await?;
                return Ok(Creation::Replayed(orders::order(&first)?));
            }
        }
        let at = micros(o.created_at);
        sqlx::query(
            "INSERT INTO orders (id, user_id, type, side, instrument, quantity, limit_price, \
               status, attempts, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)",
        )
        .bind(&id)
        .bind(&user)
        .bind(o.order.order_type().as_str())
        .bind(o.order.side.as_str())
        .bind(o.order.instrument.as_str())
        .bind(o.order.quantity.get())
        .bind(o.order.limit_price().map(|p| p.to_string()))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO outbox (order_id, created_at, next_attempt_at) VALUES (?1, ?2, ?2)",
        )
        .bind(&id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        super::outbox::insert_event(&mut tx, &id, events::CREATED, at, &new.data).await?;
        if let Some(key) = new.idempotency_key {
            sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, order_id, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&user)
            .bind(key)
            .bind(&new.fingerprint)
            .bind(&id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Creation::Created(new.order))
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {} FROM orders WHERE id = ?", orders::COLUMNS);
        let found = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        found.as_ref().map(orders::order).transpose()
    }

    async fn list_orders(&self, q: &OrderQuery) -> Result<Vec<Order>, StoreError> {
        let sql = orders::list_sql(q, |n| format!("?{n}"));
        let mut query = sqlx::query(&sql);
        if let Some(u) = q.user {
            query = query.bind(u.to_string());
        }
        if let Some(s) = q.status {
            query = query.bind(s.as_str());
        }
        if let Some(b) = q.before {
            query = query.bind(b.to_string());
        }
        let page = query.bind(i64::from(q.limit)).fetch_all(&self.read).await?;
        page.iter().map(orders::order).collect()
    }

    async fn order_events(&self, id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        let history = sqlx::query(
            "SELECT id, order_id, event, at, data FROM order_events WHERE order_id = ? ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&self.read)
        .await?;
        history.iter().map(orders::event).collect()
    }
}
