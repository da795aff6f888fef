//! The relay's side of the orders outbox (see [`crate::orders`]): claiming due orders for a
//! lease, recording each placement's outcome, and publishing the order events.

use crate::orders::{self, AttemptOutcome, Order, OrderEvent, OutboxStats};
use crate::row::truncate_micros;
use crate::{Store, StoreError};
use async_trait::async_trait;
use bourse_domain::order::events;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// A failed placement attempt, as [`Store::record_failed_attempt`] records it.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    pub id: Uuid,
    pub worker: &'a str,
    pub error: &'a str,
    pub retry_in: Duration,
    /// At least 1.
    pub max_attempts: i32,
}

/// Due orders claimed by `worker` for `lease`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub worker: &'a str,
    pub limit: u32,
    pub lease: Duration,
}

/// An order the exchange confirmed.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub id: Uuid,
    /// Truncated to the microsecond.
    pub placed_at: DateTime<Utc>,
    /// The exchange had placed it already (a retried placement).
    pub duplicate: bool,
}

/// The outbox as the relays use it, one implementation per engine.
#[async_trait]
pub trait OutboxRepo: Send + Sync {
    /// [`Store::claim_outbox`], `limit` above 0.
    async fn claim_outbox(&self, claim: Claim<'_>) -> Result<Vec<Order>, StoreError>;
    /// [`Store::mark_placed`].
    async fn mark_placed(&self, placed: Placement) -> Result<Option<i32>, StoreError>;
    async fn record_failed_attempt(
        &self,
        attempt: FailedAttempt<'_>,
    ) -> Result<AttemptOutcome, StoreError>;
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
    async fn unpublished_events(&self, limit: u32) -> Result<Option<EventBatch>, StoreError>;
}

/// Marks the events of a batch published, the way its engine took them.
#[async_trait]
pub trait PublishedMark: Send {
    async fn mark(self: Box<Self>, ids: &[i64]) -> Result<(), StoreError>;
}

/// Events taken by [`Store::unpublished_events`]. Publish them, then call
/// [`EventBatch::mark_published`] with the ids that the broker confirmed; dropping the batch
/// leaves them unpublished for the next round.
pub struct EventBatch {
    pub events: Vec<OrderEvent>,
    mark: Box<dyn PublishedMark>,
}

impl AttemptOutcome {
    /// The outcome of an attempt that was recorded.
    pub(crate) fn recorded(attempts: i32, failed: bool) -> AttemptOutcome {
        if failed {
            AttemptOutcome::Failed { attempts }
        } else {
            AttemptOutcome::Retry { attempts }
        }
    }
}

impl FailedAttempt<'_> {
    /// The events a recorded attempt appends: `order.placement_failed` (with the next attempt's
    /// instant while one is due), then `order.failed` when it was the last.
    pub(crate) fn events(
        &self,
        attempts: i32,
        failed: bool,
        next: DateTime<Utc>,
    ) -> Vec<(&'static str, Value)> {
        let mut events = vec![(
            events::PLACEMENT_FAILED,
            json!({
                "attempt": attempts,
                "error": self.error,
                "next_attempt_at": (!failed).then_some(next).map(orders::rfc3339),
            }),
        )];
        if failed {
            events.push((
                events::FAILED,
                json!({"attempts": attempts, "error": self.error}),
            ));
        }
        events
    }
}

impl EventBatch {
    pub(crate) fn new(events: Vec<OrderEvent>, mark: Box<dyn PublishedMark>) -> EventBatch {
        EventBatch { events, mark }
    }

    pub async fn mark_published(self, ids: &[i64]) -> Result<(), StoreError> {
        self.mark.mark(ids).await
    }
}

impl Store {
    /// Claims up to `limit` due outbox rows for `worker` for `lease`, and returns their orders.
    /// Rows claimed by another worker whose lease has not ended are skipped, never waited for.
    pub async fn claim_outbox(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Order>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let claim = Claim {
            worker,
            limit,
            lease,
        };
        self.outbox.claim_outbox(claim).await
    }

    /// Records that the exchange confirmed the order: `placed`, its outbox row gone, an
    /// `order.placed` event. Returns the number of attempts when this call placed the order, and
    /// `None` when it was placed already (another relay got there first).
    pub async fn mark_placed(
        &self,
        id: Uuid,
        placed_at: DateTime<Utc>,
        duplicate: bool,
    ) -> Result<Option<i32>, StoreError> {
        let placed = Placement {
            id,
            placed_at: truncate_micros(placed_at),
            duplicate,
        };
        self.outbox.mark_placed(placed).await
    }

    /// Records a failed placement attempt by `worker`: the error is kept, and the order is due
    /// again after `retry_in`, or `failed` when this was attempt number `max_attempts`. Each
    /// outcome appends its events (`order.placement_failed`, and `order.failed` at the end).
    pub async fn record_failed_attempt(
        &self,
        id: Uuid,
        worker: &str,
        error: &str,
        retry_in: Duration,
        max_attempts: u32,
    ) -> Result<AttemptOutcome, StoreError> {
        let max_attempts = i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX);
        let attempt = FailedAttempt {
            id,
            worker,
            error,
            retry_in,
            max_attempts,
        };
        self.outbox.record_failed_attempt(attempt).await
    }

    /// How many orders wait in the outbox, and for how long the oldest has.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.outbox.outbox_stats().await
    }

    /// The oldest events not yet published to the message broker, at most `limit`, oldest first.
    /// On PostgreSQL the batch holds a transaction-level advisory lock until it is finished, so
    /// that several relays publish one after the other, in order, instead of all publishing the
    /// same events; `None` when another relay holds it.
    pub async fn unpublished_events(&self, limit: u32) -> Result<Option<EventBatch>, StoreError> {
        self.outbox.unpublished_events(limit).await
    }
}
