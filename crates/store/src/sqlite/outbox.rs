//! [`OutboxRepo`] on SQLite: claims and outcomes go through the single writer connection, which
//! serialises them; events need no lock to be published in order.

use super::{micros, Sqlite};
use crate::orders::{self, AttemptOutcome, Order, OutboxStats};
use crate::outbox::{Claim, EventBatch, FailedAttempt, OutboxRepo, Placement, PublishedMark};
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::order::{events, OrderStatus};
use chrono::Utc;
use serde_json::json;
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::time::Duration;

/// Marks events published through the writer.
struct Writer(SqlitePool);

#[async_trait]
impl PublishedMark for Writer {
    async fn mark(self: Box<Self>, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders = vec!["?"; ids.len()].join(", ");
        let sql = format!("UPDATE order_events SET published_at = ? WHERE id IN ({placeholders})");
        let mut query = sqlx::query(&sql).bind(micros(Utc::now()));
        for id in ids {
            query = query.bind(id);
        }
        query.execute(&self.0).await?;
        Ok(())
    }
}

/// Appends an event (`data` is JSON text) to the order `id`'s history.
pub(super) async fn insert_event(
    conn: &mut SqliteConnection,
    id: &str,
    event: &str,
    at: i64,
    data: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO order_events (order_id, event, at, data) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(event)
        .bind(at)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl OutboxRepo for Sqlite {
    async fn claim_outbox(&self, claim: Claim<'_>) -> Result<Vec<Order>, StoreError> {
        let now = Utc::now();
        let until = micros(now) + i64::try_from(claim.lease.as_micros()).unwrap_or(i64::MAX / 2);
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE outbox SET claimed_by = ?1, lease_until = ?2, next_attempt_at = ?2 \
             WHERE order_id IN (SELECT order_id FROM outbox WHERE next_attempt_at <= ?3 \
                                ORDER BY next_attempt_at LIMIT ?4)",
        )
        .bind(claim.worker)
        .bind(until)
        .bind(micros(now))
        .bind(i64::from(claim.limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM orders o JOIN outbox b ON b.order_id = o.id \
             WHERE b.claimed_by = ? AND b.lease_until = ? ORDER BY o.created_at",
            orders::O_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(claim.worker)
            .bind(until)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(orders::order).collect()
    }

    async fn mark_placed(&self, placed: Placement) -> Result<Option<i32>, StoreError> {
        let now = micros(Utc::now());
        let order = placed.id.to_string();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM outbox WHERE order_id = ?")
            .bind(&order)
            .execute(&mut *tx)
            .await?;
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE orders SET status = 'placed', attempts = attempts + 1, placed_at = ?, \
               updated_at = ? WHERE id = ? AND status <> 'placed' RETURNING attempts",
        )
        .bind(micros(placed.placed_at))
        .bind(now)
        .bind(&order)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(attempt) = attempts {
            let at = orders::rfc3339(placed.placed_at);
            let data = json!({"attempt": attempt, "placed_at": at, "duplicate": placed.duplicate});
            insert_event(&mut tx, &order, events::PLACED, now, &data.to_string()).await?;
        }
        tx.commit().await?;
        Ok(attempts)
    }

    async fn record_failed_attempt(
        &self,
        a: FailedAttempt<'_>,
    ) -> Result<AttemptOutcome, StoreError> {
        let now = crate::row::truncate_micros(Utc::now());
        let next = now + chrono::Duration::from_std(a.retry_in).unwrap_or(chrono::Duration::MAX);
        let order = a.id.to_string();
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE outbox SET claimed_by = NULL, lease_until = NULL, next_attempt_at = ? \
             WHERE order_id = ? AND claimed_by = ?",
        )
        .bind(micros(next))
        .bind(&order)
        .bind(a.worker)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(AttemptOutcome::NotClaimed);
        }
        let updated: Option<(i32, String)> = sqlx::query_as(
            "UPDATE orders SET attempts = attempts + 1, last_error = ?2, updated_at = ?3, \
               status = CASE WHEN attempts + 1 >= ?4 THEN 'failed' ELSE status END \
             WHERE id = ?1 AND status = 'pending' RETURNING attempts, status",
        )
        .bind(&order)
        .bind(a.error)
        .bind(micros(now))
        .bind(a.max_attempts)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((attempts, status)) = updated else {
            return Ok(AttemptOutcome::NotClaimed);
        };
        let failed = status == OrderStatus::Failed.as_str();
        let at = micros(now);
        for (event, data) in a.events(attempts, failed, next) {
            insert_event(&mut tx, &order, event, at, &data.to_string()).await?;
        }
        if failed {
            sqlx::query("DELETE FROM outbox WHERE order_id = ?")
                .bind(&order)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(AttemptOutcome::recorded(attempts, failed))
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query("SELECT count(*), min(created_at) FROM outbox")
            .fetch_one(&self.read)
            .await?;
        let oldest: Option<i64> = row.try_get(1)?;
        let age = oldest
            .map(|us| (micros(Utc::now()) - us).max(0))
            .unwrap_or(0);
        Ok(OutboxStats {
            depth: row.try_get(0)?,
            oldest_age: Duration::from_micros(u64::try_from(age).unwrap_or(0)),
        })
    }

    async fn unpublished_events(&self, limit: u32) -> Result<Option<EventBatch>, StoreError> {
        let events = sqlx::query(
            "SELECT id, order_id, event, at, data FROM order_events \
             WHERE published_at IS NULL ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(orders::event)
        .collect::<Result<_, _>>()?;
        let mark = Box::new(Writer(self.write.clone()));
        Ok(Some(EventBatch::new(events, mark)))
    }
}
