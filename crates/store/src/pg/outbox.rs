//! [`OutboxRepo`] on PostgreSQL: relays claim rows with `FOR UPDATE SKIP LOCKED`, so that any
//! number of them share the work without waiting on each other; event publishing is serialised
//! by an advisory lock held for the batch.

use super::Pg;
use crate::orders::{self, AttemptOutcome, Order, OutboxStats};
use crate::outbox::{Claim, EventBatch, FailedAttempt, OutboxRepo, Placement, PublishedMark};
use crate::StoreError;
use async_trait::async_trait;
use bourse_domain::order::{events, OrderStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Row, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// Key of the advisory lock that serializes event publishing.
const PUBLISH_LOCK: i64 = 0x626f_7572_7365_0001;

/// The transaction holding [`PUBLISH_LOCK`] for a batch of events.
struct Held(Transaction<'static, Postgres>);

#[async_trait]
impl PublishedMark for Held {
    async fn mark(self: Box<Self>, ids: &[i64]) -> Result<(), StoreError> {
        let Held(mut tx) = *self;
        if !ids.is_empty() {
            sqlx::query("UPDATE order_events SET published_at = $2 WHERE id = ANY($1)")
                .bind(ids)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    event: &str,
    at: DateTime<Utc>,
    data: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO order_events (order_id, event, at, data) VALUES ($1, $2, $3, $4::jsonb)",
    )
    .bind(id)
    .bind(event)
    .bind(at)
    .bind(data.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl OutboxRepo for Pg {
    async fn claim_outbox(&self, claim: Claim<'_>) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "WITH due AS ( \
               SELECT order_id FROM outbox WHERE next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
               UPDATE outbox b SET claimed_by = $2, \
                 lease_until = now() + make_interval(secs => $3), \
                 next_attempt_at = now() + make_interval(secs => $3) \
               FROM due WHERE b.order_id = due.order_id RETURNING b.order_id) \
             SELECT {} FROM orders o JOIN claimed c ON c.order_id = o.id \
             ORDER BY o.created_at",
            orders::O_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(claim.limit))
            .bind(claim.worker)
            .bind(claim.lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(orders::order).collect()
    }

    async fn mark_placed(&self, placed: Placement) -> Result<Option<i32>, StoreError> {
        let now = crate::row::truncate_micros(Utc::now());
        let sql = format!(
            "WITH b AS (DELETE FROM outbox WHERE order_id = $1), \
             o AS (UPDATE orders SET status = 'placed', attempts = attempts + 1, placed_at = $2, \
                     updated_at = $3 WHERE id = $1 AND status <> 'placed' RETURNING attempts), \
             e AS (INSERT INTO order_events (order_id, event, at, data) \
                   SELECT $1, '{placed}', $3, jsonb_build_object('attempt', attempts, \
                     'placed_at', $4::text, 'duplicate', $5::boolean) FROM o) \
             SELECT attempts FROM o",
            placed = events::PLACED,
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(placed.id)
            .bind(placed.placed_at)
            .bind(now)
            .bind(orders::rfc3339(placed.placed_at))
            .bind(placed.duplicate)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn record_failed_attempt(
        &self,
        a: FailedAttempt<'_>,
    ) -> Result<AttemptOutcome, StoreError> {
        let now = crate::row::truncate_micros(Utc::now());
        let mut tx = self.pool.begin().await?;
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE outbox SET claimed_by = NULL, lease_until = NULL, \
               next_attempt_at = now() + make_interval(secs => $3) \
             WHERE order_id = $1 AND claimed_by = $2 RETURNING next_attempt_at",
        )
        .bind(a.id)
        .bind(a.worker)
        .bind(a.retry_in.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(next) = next else {
            return Ok(AttemptOutcome::NotClaimed);
        };
        let row = sqlx::query(
            "UPDATE orders SET attempts = attempts + 1, last_error = $2, updated_at = $3, \
               status = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE status END \
             WHERE id = $1 AND status = 'pending' RETURNING attempts, status",
        )
        .bind(a.id)
        .bind(a.error)
        .bind(now)
        .bind(a.max_attempts)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(AttemptOutcome::NotClaimed);
        };
        let attempts: i32 = row.try_get(0)?;
        let failed = row.try_get::<&str, _>(1)? == OrderStatus::Failed.as_str();
        if failed {
            sqlx::query("DELETE FROM outbox WHERE order_id = $1")
                .bind(a.id)
                .execute(&mut *tx)
                .await?;
        }
        for (event, data) in a.events(attempts, failed, next) {
            insert_event(&mut tx, a.id, event, now, &data).await?;
        }
        tx.commit().await?;
        Ok(AttemptOutcome::recorded(attempts, failed))
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            depth: row.try_get(0)?,
            oldest_age: Duration::from_secs_f64(row.try_get::<f64, _>(1)?.max(0.0)),
        })
    }

    async fn unpublished_events(&self, limit: u32) -> Result<Option<EventBatch>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(PUBLISH_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let events = sqlx::query(
            "SELECT id, order_id, event, at, data::text FROM order_events \
             WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(orders::event)
        .collect::<Result<_, _>>()?;
        Ok(Some(EventBatch::new(events, Box::new(Held(tx)))))
    }
}
