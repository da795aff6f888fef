//! Orders and their transactional outbox.
//!
//! - [`Store::create_order`] writes the order, its outbox row and its `order.created` event in
//!   one transaction (on PostgreSQL one statement, so one round trip): a caller that got `Ok` may
//!   promise the client that the order will be placed.
//! - The relay side claims due outbox rows ([`Store::claim_outbox`]) for a lease: PostgreSQL with
//!   `FOR UPDATE SKIP LOCKED`, so that any number of relays share the work without waiting on each
//!   other; SQLite through its single writer connection. Claiming moves `next_attempt_at` to the
//!   end of the lease, so a relay that dies leaves its rows due again once the lease ends.
//! - Each outcome ([`Store::mark_placed`], [`Store::record_failed_attempt`]) changes the order,
//!   the outbox and the event history in one transaction.
//! - Events carry `published_at` so that publishing them to RabbitMQ is itself an outbox
//!   ([`Store::unpublished_events`]): an event is never lost between commit and broker.

use crate::row::{truncate_micros, Columns};
use crate::{Store, StoreError};
use async_trait::async_trait;
use bourse_domain::order::{Instrument, NewOrder, OrderStatus, OrderType, Pricing, Quantity, Side};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub order: NewOrder,
    pub status: OrderStatus,
    /// Placement attempts made so far (the successful one included).
    pub attempts: i32,
    pub last_error: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What [`Store::create_order`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Creation {
    /// A new order, committed with its outbox row.
    Created(Order),
    /// The idempotency key was used before with the same order: the first order, unchanged.
    Replayed(Order),
}

/// One entry of an order's history.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    pub id: i64,
    pub order_id: Uuid,
    pub event: String,
    pub at: DateTime<Utc>,
    pub data: Value,
}

/// Which orders [`Store::list_orders`] returns: newest first, older than the order `before`.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    /// Only this user's orders (`None`: everyone's, for admins).
    pub user: Option<Uuid>,
    pub status: Option<OrderStatus>,
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// The result of a failed placement attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Recorded; the order is due again after the delay.
    Retry { attempts: i32 },
    /// That was the last allowed attempt: the order is `failed`.
    Failed { attempts: i32 },
    /// The row is not (or no longer) claimed by this worker: its lease ended and another relay
    /// took over, or the order was placed meanwhile. Nothing was written.
    NotClaimed,
}

/// The outbox at a glance, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxStats {
    pub depth: i64,
    /// Age of the oldest row, 0 when empty.
    pub oldest_age: Duration,
}

/// The columns of an order, in the order [`order_at`] decodes them.
pub(crate) const COLUMNS: &str = "id, user_id, type, side, instrument, quantity, limit_price, \
                                  status, attempts, last_error, placed_at, created_at";
/// [`COLUMNS`] of the table aliased `o`.
pub(crate) const O_COLUMNS: &str = "o.id, o.user_id, o.type, o.side, o.instrument, o.quantity, \
     o.limit_price, o.status, o.attempts, o.last_error, o.placed_at, o.created_at";

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn created_data(o: &NewOrder) -> Value {
    json!({
        "type": o.order_type().as_str(),
        "side": o.side.as_str(),
        "instrument": o.instrument.as_str(),
        "quantity": o.quantity.get(),
        "limit_price": o.limit_price().map(|p| p.to_string()),
    })
}

fn corrupt(what: &str, value: impl std::fmt::Debug) -> StoreError {
    StoreError::Corrupt(format!("order {what} {value:?}"))
}

/// An order whose [`COLUMNS`] start at column `first` of the row.
pub(crate) fn order_at(r: &impl Columns, first: usize) -> Result<Order, StoreError> {
    let at = |i: usize| first + i;
    let kind = r.text(at(2))?;
    let kind = OrderType::parse(&kind).ok_or_else(|| corrupt("type", &kind))?;
    let pricing =
        Pricing::from_parts(kind, r.opt_decimal(at(6))?).map_err(|e| corrupt("pricing", e))?;
    let (side, instrument, quantity) = (r.text(at(3))?, r.text(at(4))?, r.int(at(5))?);
    let status = r.text(at(7))?;
    Ok(Order {
        id: r.uuid(at(0))?,
        user_id: r.uuid(at(1))?,
        order: NewOrder {
            pricing,
            side: Side::parse(&side).ok_or_else(|| corrupt("side", &side))?,
            instrument: Instrument::parse(&instrument)
                .map_err(|_| corrupt("instrument", &instrument))?,
            quantity: Quantity::new(quantity).map_err(|_| corrupt("quantity", quantity))?,
        },
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        attempts: r.int32(at(8))?,
        last_error: r.opt_text(at(9))?,
        placed_at: r.opt_instant(at(10))?,
        created_at: r.instant(at(11))?,
    })
}

/// A row of [`COLUMNS`].
pub(crate) fn order(r: &impl Columns) -> Result<Order, StoreError> {
    order_at(r, 0)
}

/// A row of `id, order_id, event, at, data` (the data as JSON text).
pub(crate) fn event(r: &impl Columns) -> Result<OrderEvent, StoreError> {
    let text = r.text(4)?;
    Ok(OrderEvent {
        id: r.int(0)?,
        order_id: r.uuid(1)?,
        event: r.text(2)?,
        at: r.instant(3)?,
        data: serde_json::from_str(&text)
            .map_err(|_| StoreError::Corrupt(format!("event data {text:?}")))?,
    })
}

pub(crate) fn key_conflict() -> StoreError {
    StoreError::Conflict("Idempotency-Key was already used with a different order".into())
}

/// The page [`Store::list_orders`] reads, with the placeholders of the engine (`mark(n)` for
/// parameter `n`): user, status and `before` in that order, each only when used (so that each
/// shape gets a plan that uses its index), then the limit.
pub(crate) fn list_sql(q: &OrderQuery, mark: fn(usize) -> String) -> String {
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut param = || {
        n += 1;
        mark(n)
    };
    if q.user.is_some() {
        conditions.push(format!("user_id = {}", param()));
    }
    if q.status.is_some() {
        conditions.push(format!("status = {}", param()));
    }
    if q.before.is_some() {
        let p = param();
        conditions.push(format!(
            "(created_at, id) < (SELECT created_at, id FROM orders WHERE id = {p})"
        ));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT {COLUMNS} FROM orders {filter} ORDER BY created_at DESC, id DESC LIMIT {}",
        param()
    )
}

/// A new order as [`OrderRepo::create_order`] stores it.
#[derive(Debug, Clone)]
pub struct Intake<'a> {
    /// The order, `pending`, with its id and creation instant.
    pub order: Order,
    /// The data of its `order.created` event, as JSON text.
    pub data: String,
    pub fingerprint: String,
    pub idempotency_key: Option<&'a str>,
}

/// Orders as the API creates and reads them, one implementation per engine.
#[async_trait]
pub trait OrderRepo: Send + Sync {
    /// [`Store::create_order`].
    async fn create_order(&self, new: Intake<'_>) -> Result<Creation, StoreError>;
    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    async fn list_orders(&self, q: &OrderQuery) -> Result<Vec<Order>, StoreError>;
    async fn order_events(&self, id: Uuid) -> Result<Vec<OrderEvent>, StoreError>;
}

impl Store {
    /// Stores a new order with its outbox row and `order.created` event, atomically.
    ///
    /// With an idempotency key (scoped to `user`): a key seen before with the same order (same
    /// [`NewOrder::fingerprint`]) returns the first order as [`Creation::Replayed`] and writes
    /// nothing; with a different order it is `Conflict`. Concurrent requests with one key create
    /// one order.
    pub async fn create_order(
        &self,
        user: Uuid,
        new: &NewOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Creation, StoreError> {
        let order = Order {
            id: Uuid::now_v7(),
            user_id: user,
            order: new.clone(),
            status: OrderStatus::Pending,
            attempts: 0,
            last_error: None,
            placed_at: None,
            created_at: truncate_micros(Utc::now()),
        };
        let intake = Intake {
            order,
            data: created_data(new).to_string(),
            fingerprint: new.fingerprint(),
            idempotency_key,
        };
        self.orders.create_order(intake).await
    }

    pub async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        self.orders.get_order(id).await
    }

    /// Orders newest first (ties by id), filtered as `q` says. An unknown `before` gives an empty
    /// page.
    pub async fn list_orders(&self, q: &OrderQuery) -> Result<Vec<Order>, StoreError> {
        self.orders.list_orders(q).await
    }

    /// The order's history, oldest first.
    pub async fn order_events(&self, id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        self.orders.order_events(id).await
    }
}
