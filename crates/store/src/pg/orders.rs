//! [`OrderRepo`] on PostgreSQL: a new order, its outbox row, its event and its idempotency key
//! are one statement (one round trip).

use super::Pg;
use crate::orders::{self, Creation, Intake, Order, OrderEvent, OrderQuery, OrderRepo, O_COLUMNS};
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::order::events;
use sqlx::Row;
use uuid::Uuid;

/// The events of an order, oldest first.
const EVENTS: &str = "SELECT id, order_id, event, at, data::text FROM order_events \
     WHERE order_id = $1 ORDER BY id";

#[async_trait]
impl OrderRepo for Pg {
    async fn create_order(&self, new: Intake<'_>) -> Result<Creation, StoreError> {
        let o = &new.order;
        // Without a key the `k` step is a constant row, so both cases share one statement.
        let source = if new.idempotency_key.is_some() {
            "k AS (INSERT INTO idempotency_keys (user_id, key, fingerprint, order_id, created_at) \
             VALUES ($2, $10, $11, $1, $8) ON CONFLICT DO NOTHING RETURNING order_id)"
        } else {
            "k AS (SELECT $1::uuid AS order_id WHERE $10::text IS NULL AND $11::text IS NOT NULL)"
        };
        let sql = format!(
            "WITH {source}, \
             o AS (INSERT INTO orders (id, user_id, type, side, instrument, quantity, limit_price, \
                     status, attempts, created_at, updated_at) \
                   SELECT $1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8 FROM k RETURNING id), \
             b AS (INSERT INTO outbox (order_id, created_at, next_attempt_at) SELECT id, $8, $8 FROM o), \
             e AS (INSERT INTO order_events (order_id, event, at, data) \
                   SELECT id, '{created}', $8, $9::jsonb FROM o) \
             SELECT count(*) FROM k",
            created = events::CREATED,
        );
        let inserted: i64 = sqlx::query_scalar(&sql)
            .bind(o.id)
            .bind(o.user_id)
            .bind(o.order.order_type().as_str())
            .bind(o.order.side.as_str())
            .bind(o.order.instrument.as_str())
            .bind(o.order.quantity.get())
            .bind(o.order.limit_price())
            .bind(o.created_at)
            .bind(&new.data)
            .bind(new.idempotency_key)
            .bind(&new.fingerprint)
            .fetch_one(&self.pool)
            .await?;
        if inserted == 1 {
            return Ok(Creation::Created(new.order));
        }
        let sql = format!(
            "SELECT k.fingerprint, {O_COLUMNS} FROM idempotency_keys k \
             JOIN orders o ON o.id = k.order_id WHERE k.user_id = $1 AND k.key = $2"
        );
        let row = sqlx::query(&sql)
            .bind(o.user_id)
            .bind(new.idempotency_key.unwrap_or_default())
            .fetch_one(&self.pool)
            .await?;
        let stored: String = row.try_get(0)?;
        if stored != new.fingerprint {
            return Err(orders::key_conflict());
        }
        Ok(Creation::Replayed(orders::order_at(&row, 1)?))
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {} FROM orders WHERE id = $1", orders::COLUMNS);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(orders::order).transpose()
    }

    async fn list_orders(&self, q: &OrderQuery) -> Result<Vec<Order>, StoreError> {
        let sql = orders::list_sql(q, |n| format!("${n}"));
        let mut query = sqlx::query(&sql);
        if let Some(u) = q.user {
            query = query.bind(u);
        }
        if let Some(s) = q.status {
            query = query.bind(s.as_str());
        }
        if let Some(b) = q.before {
            query = query.bind(b);
        }
        let rows = query.bind(i64::from(q.limit)).fetch_all(&self.pool).await?;
        rows.iter().map(orders::order).collect()
    }

    async fn order_events(&self, id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        let rows = sqlx::query(EVENTS).bind(id).fetch_all(&self.pool).await?;
        rows.iter().map(orders::event).collect()
    }
}
