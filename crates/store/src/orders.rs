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

use crate::sqlite_codec::{decimal, from_micros, micros, uuid};
use crate::{Db, Store, StoreError};
use bourse_domain::order::{
    events, Instrument, NewOrder, OrderStatus, OrderType, Pricing, Quantity, Side,
};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::{Postgres, Row};
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

const COLUMNS: &str = "id, user_id, type, side, instrument, quantity, limit_price, status, \
                       attempts, last_error, placed_at, created_at";
const O_COLUMNS: &str = "o.id, o.user_id, o.type, o.side, o.instrument, o.quantity, \
                         o.limit_price, o.status, o.attempts, o.last_error, o.placed_at, o.created_at";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Instants are kept to the microsecond by both engines; truncating up front makes what a caller
/// gets back from a write equal to what a later read returns.
fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
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

/// Rebuilds the domain order from its stored columns.
#[allow(clippy::too_many_arguments)]
fn assemble(
    id: Uuid,
    user_id: Uuid,
    kind: &str,
    side: &str,
    instrument: &str,
    quantity: i64,
    limit_price: Option<Decimal>,
    status: &str,
    attempts: i32,
    last_error: Option<String>,
    placed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
) -> Result<Order, StoreError> {
    let kind = OrderType::parse(kind).ok_or_else(|| corrupt("type", kind))?;
    let pricing = Pricing::from_parts(kind, limit_price).map_err(|e| corrupt("pricing", e))?;
    Ok(Order {
        id,
        user_id,
        order: NewOrder {
            pricing,
            side: Side::parse(side).ok_or_else(|| corrupt("side", side))?,
            instrument: Instrument::parse(instrument)
                .map_err(|_| corrupt("instrument", instrument))?,
            quantity: Quantity::new(quantity).map_err(|_| corrupt("quantity", quantity))?,
        },
        status: OrderStatus::parse(status).ok_or_else(|| corrupt("status", status))?,
        attempts,
        last_error,
        placed_at,
        created_at,
    })
}

fn pg_order(r: &sqlx::postgres::PgRow) -> Result<Order, StoreError> {
    pg_order_from(r, 0)
}

/// An order whose [`COLUMNS`] start at column `first` of the row.
fn pg_order_from(r: &sqlx::postgres::PgRow, first: usize) -> Result<Order, StoreError> {
    let at = |i: usize| first + i;
    assemble(
        r.try_get(at(0))?,
        r.try_get(at(1))?,
        &r.try_get::<String, _>(at(2))?,
        &r.try_get::<String, _>(at(3))?,
        &r.try_get::<String, _>(at(4))?,
        r.try_get(at(5))?,
        r.try_get(at(6))?,
        &r.try_get::<String, _>(at(7))?,
        r.try_get(at(8))?,
        r.try_get(at(9))?,
        r.try_get(at(10))?,
        r.try_get(at(11))?,
    )
}

fn sqlite_order(r: &sqlx::sqlite::SqliteRow) -> Result<Order, StoreError> {
    assemble(
        uuid(&r.try_get::<String, _>(0)?)?,
        uuid(&r.try_get::<String, _>(1)?)?,
        &r.try_get::<String, _>(2)?,
        &r.try_get::<String, _>(3)?,
        &r.try_get::<String, _>(4)?,
        r.try_get(5)?,
        r.try_get::<Option<String>, _>(6)?
            .map(|p| decimal(&p))
            .transpose()?,
        &r.try_get::<String, _>(7)?,
        r.try_get(8)?,
        r.try_get(9)?,
        r.try_get::<Option<i64>, _>(10)?
            .map(from_micros)
            .transpose()?,
        from_micros(r.try_get(11)?)?,
    )
}

fn json_of(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt(format!("event data {text:?}")))
}

fn key_conflict() -> StoreError {
    StoreError::Conflict("Idempotency-Key was already used with a different order".into())
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
        let id = Uuid::now_v7();
        let now = truncate_micros(Utc::now());
        let data = created_data(new).to_string();
        let fingerprint = new.fingerprint();
        let order = Order {
            id,
            user_id: user,
            order: new.clone(),
            status: OrderStatus::Pending,
            attempts: 0,
            last_error: None,
            placed_at: None,
            created_at: now,
        };
        match &self.db {
            Db::Postgres(pool) => {
                // Without a key the `k` step is a constant row, so both cases share one statement.
                let source = if idempotency_key.is_some() {
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
                    .bind(id)
                    .bind(user)
                    .bind(new.order_type().as_str())
                    .bind(new.side.as_str())
                    .bind(new.instrument.as_str())
                    .bind(new.quantity.get())
                    .bind(new.limit_price())
                    .bind(now)
                    .bind(&data)
                    .bind(idempotency_key)
                    .bind(&fingerprint)
                    .fetch_one(pool)
                    .await?;
                if inserted == 1 {
                    return Ok(Creation::Created(order));
                }
                let key = idempotency_key.unwrap_or_default();
                let sql = format!(
                    "SELECT k.fingerprint, {O_COLUMNS} FROM idempotency_keys k \
                     JOIN orders o ON o.id = k.order_id WHERE k.user_id = $1 AND k.key = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(user)
                    .bind(key)
                    .fetch_one(pool)
                    .await?;
                let stored: String = row.try_get(0)?;
                if stored != fingerprint {
                    return Err(key_conflict());
                }
                Ok(Creation::Replayed(pg_order_from(&row, 1)?))
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                if let Some(key) = idempotency_key {
                    let found = sqlx::query(
                        "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = ? AND key = ?",
                    )
                    .bind(user.to_string())
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = found {
                        let stored: String = row.try_get(0)?;
                        if stored != fingerprint {
                            return Err(key_conflict());
                        }
                        let order_id: String = row.try_get(1)?;
                        let row =
                            sqlx::query(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?"))
                                .bind(order_id)
                                .fetch_one(&mut *tx)
                                .await?;
                        return Ok(Creation::Replayed(sqlite_order(&row)?));
                    }
                }
                let at = micros(now);
                sqlx::query(
                    "INSERT INTO orders (id, user_id, type, side, instrument, quantity, limit_price, \
                       status, attempts, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)",
                )
                .bind(id.to_string())
                .bind(user.to_string())
                .bind(new.order_type().as_str())
                .bind(new.side.as_str())
                .bind(new.instrument.as_str())
                .bind(new.quantity.get())
                .bind(new.limit_price().map(|p| p.to_string()))
                .bind(at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO outbox (order_id, created_at, next_attempt_at) VALUES (?1, ?2, ?2)",
                )
                .bind(id.to_string())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO order_events (order_id, event, at, data) VALUES (?, ?, ?, ?)",
                )
                .bind(id.to_string())
                .bind(events::CREATED)
                .bind(at)
                .bind(&data)
                .execute(&mut *tx)
                .await?;
                if let Some(key) = idempotency_key {
                    sqlx::query(
                        "INSERT INTO idempotency_keys (user_id, key, fingerprint, order_id, created_at) \
                         VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(user.to_string())
                    .bind(key)
                    .bind(&fingerprint)
                    .bind(id.to_string())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Creation::Created(order))
            }
        }
    }

    pub async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
        match &self.db {
            Db::Postgres(pool) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(pg_order)
                .transpose(),
            Db::Sqlite { read, .. } => sqlx::query(&sql)
                .bind(id.to_string())
                .fetch_optional(read)
                .await?
                .as_ref()
                .map(sqlite_order)
                .transpose(),
        }
    }

    /// Orders newest first (ties by id), filtered as `q` says. An unknown `before` gives an empty
    /// page.
    pub async fn list_orders(&self, q: &OrderQuery) -> Result<Vec<Order>, StoreError> {
        // Conditions are added only when used, so that each shape gets a plan that uses its index.
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
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
        let sql = format!(
            "SELECT {COLUMNS} FROM orders {filter} ORDER BY created_at DESC, id DESC LIMIT {}",
            param()
        );
        let limit = i64::from(q.limit);
        match &self.db {
            Db::Postgres(pool) => {
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
                query
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(pg_order)
                    .collect()
            }
            Db::Sqlite { read, .. } => {
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
                query
                    .bind(limit)
                    .fetch_all(read)
                    .await?
                    .iter()
                    .map(sqlite_order)
                    .collect()
            }
        }
    }

    /// The order's history, oldest first.
    pub async fn order_events(&self, id: Uuid) -> Result<Vec<OrderEvent>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "SELECT id, order_id, event, at, data::text FROM order_events WHERE order_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(pg_event)
            .collect(),
            Db::Sqlite { read, .. } => sqlx::query(
                "SELECT id, order_id, event, at, data FROM order_events WHERE order_id = ? ORDER BY id",
            )
            .bind(id.to_string())
            .fetch_all(read)
            .await?
            .iter()
            .map(sqlite_event)
            .collect(),
        }
    }

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
        match &self.db {
            Db::Postgres(pool) => {
                let sql = format!(
                    "WITH due AS ( \
                       SELECT order_id FROM outbox WHERE next_attempt_at <= now() \
                       ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
                     claimed AS ( \
                       UPDATE outbox b SET claimed_by = $2, \
                         lease_until = now() + make_interval(secs => $3), \
                         next_attempt_at = now() + make_interval(secs => $3) \
                       FROM due WHERE b.order_id = due.order_id RETURNING b.order_id) \
                     SELECT {O_COLUMNS} FROM orders o JOIN claimed c ON c.order_id = o.id \
                     ORDER BY o.created_at"
                );
                sqlx::query(&sql)
                    .bind(i64::from(limit))
                    .bind(worker)
                    .bind(lease.as_secs_f64())
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(pg_order)
                    .collect()
            }
            Db::Sqlite { write, .. } => {
                let now = Utc::now();
                let until = micros(now) + i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                let claimed = sqlx::query(
                    "UPDATE outbox SET claimed_by = ?1, lease_until = ?2, next_attempt_at = ?2 \
                     WHERE order_id IN (SELECT order_id FROM outbox WHERE next_attempt_at <= ?3 \
                                        ORDER BY next_attempt_at LIMIT ?4)",
                )
                .bind(worker)
                .bind(until)
                .bind(micros(now))
                .bind(i64::from(limit))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    tx.rollback().await?;
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT {O_COLUMNS} FROM orders o JOIN outbox b ON b.order_id = o.id \
                     WHERE b.claimed_by = ? AND b.lease_until = ? ORDER BY o.created_at"
                );
                let rows = sqlx::query(&sql)
                    .bind(worker)
                    .bind(until)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter().map(sqlite_order).collect()
            }
        }
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
        let placed_at = truncate_micros(placed_at);
        let now = truncate_micros(Utc::now());
        match &self.db {
            Db::Postgres(pool) => {
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
                    .bind(id)
                    .bind(placed_at)
                    .bind(now)
                    .bind(rfc3339(placed_at))
                    .bind(duplicate)
                    .fetch_optional(pool)
                    .await?)
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                sqlx::query("DELETE FROM outbox WHERE order_id = ?")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let attempts: Option<i32> = sqlx::query_scalar(
                    "UPDATE orders SET status = 'placed', attempts = attempts + 1, placed_at = ?, \
                       updated_at = ? WHERE id = ? AND status <> 'placed' RETURNING attempts",
                )
                .bind(micros(placed_at))
                .bind(micros(now))
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(attempt) = attempts {
                    let data = json!({"attempt": attempt, "placed_at": rfc3339(placed_at), "duplicate": duplicate});
                    insert_sqlite_event(&mut tx, id, events::PLACED, now, &data).await?;
                }
                tx.commit().await?;
                Ok(attempts)
            }
        }
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
        let now = truncate_micros(Utc::now());
        let max_attempts = i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX);
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let next: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "UPDATE outbox SET claimed_by = NULL, lease_until = NULL, \
                       next_attempt_at = now() + make_interval(secs => $3) \
                     WHERE order_id = $1 AND claimed_by = $2 RETURNING next_attempt_at",
                )
                .bind(id)
                .bind(worker)
                .bind(retry_in.as_secs_f64())
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
                .bind(id)
                .bind(error)
                .bind(now)
                .bind(max_attempts)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(AttemptOutcome::NotClaimed);
                };
                let attempts: i32 = row.try_get(0)?;
                let failed = row.try_get::<String, _>(1)? == OrderStatus::Failed.as_str();
                let mut to_write = vec![(
                    events::PLACEMENT_FAILED,
                    failed_attempt_data(attempts, error, (!failed).then_some(next)),
                )];
                if failed {
                    sqlx::query("DELETE FROM outbox WHERE order_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    to_write.push((
                        events::FAILED,
                        json!({"attempts": attempts, "error": error}),
                    ));
                }
                for (event, data) in to_write {
                    insert_pg_event(&mut tx, id, event, now, &data).await?;
                }
                tx.commit().await?;
                Ok(if failed {
                    AttemptOutcome::Failed { attempts }
                } else {
                    AttemptOutcome::Retry { attempts }
                })
            }
            Db::Sqlite { write, .. } => {
                let next =
                    now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::MAX);
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                let claimed = sqlx::query(
                    "UPDATE outbox SET claimed_by = NULL, lease_until = NULL, next_attempt_at = ? \
                     WHERE order_id = ? AND claimed_by = ?",
                )
                .bind(micros(next))
                .bind(id.to_string())
                .bind(worker)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    return Ok(AttemptOutcome::NotClaimed);
                }
                let row = sqlx::query(
                    "UPDATE orders SET attempts = attempts + 1, last_error = ?2, updated_at = ?3, \
                       status = CASE WHEN attempts + 1 >= ?4 THEN 'failed' ELSE status END \
                     WHERE id = ?1 AND status = 'pending' RETURNING attempts, status",
                )
                .bind(id.to_string())
                .bind(error)
                .bind(micros(now))
                .bind(max_attempts)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(AttemptOutcome::NotClaimed);
                };
                let attempts: i32 = row.try_get(0)?;
                let failed = row.try_get::<String, _>(1)? == OrderStatus::Failed.as_str();
                let data = failed_attempt_data(attempts, error, (!failed).then_some(next));
                insert_sqlite_event(&mut tx, id, events::PLACEMENT_FAILED, now, &data).await?;
                if failed {
                    sqlx::query("DELETE FROM outbox WHERE order_id = ?")
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                    let data = json!({"attempts": attempts, "error": error});
                    insert_sqlite_event(&mut tx, id, events::FAILED, now, &data).await?;
                }
                tx.commit().await?;
                Ok(if failed {
                    AttemptOutcome::Failed { attempts }
                } else {
                    AttemptOutcome::Retry { attempts }
                })
            }
        }
    }

    /// How many orders wait in the outbox, and for how long the oldest has.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM outbox",
                )
                .fetch_one(pool)
                .await?;
                Ok(OutboxStats {
                    depth: row.try_get(0)?,
                    oldest_age: Duration::from_secs_f64(row.try_get::<f64, _>(1)?.max(0.0)),
                })
            }
            Db::Sqlite { read, .. } => {
                let row = sqlx::query("SELECT count(*), min(created_at) FROM outbox")
                    .fetch_one(read)
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
        }
    }

    /// The oldest events not yet published to the message broker, at most `limit`, oldest first.
    /// On PostgreSQL the batch holds a transaction-level advisory lock until it is finished, so
    /// that several relays publish one after the other, in order, instead of all publishing the
    /// same events; `None` when another relay holds it.
    pub async fn unpublished_events(&self, limit: u32) -> Result<Option<EventBatch>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
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
                .map(pg_event)
                .collect::<Result<_, _>>()?;
                Ok(Some(EventBatch {
                    events,
                    inner: BatchInner::Postgres(tx),
                }))
            }
            Db::Sqlite { read, .. } => {
                let events = sqlx::query(
                    "SELECT id, order_id, event, at, data FROM order_events \
                     WHERE published_at IS NULL ORDER BY id LIMIT ?",
                )
                .bind(i64::from(limit))
                .fetch_all(read)
                .await?
                .iter()
                .map(sqlite_event)
                .collect::<Result<_, _>>()?;
                Ok(Some(EventBatch {
                    events,
                    inner: BatchInner::Sqlite(self.clone()),
                }))
            }
        }
    }
}

/// Key of the advisory lock that serializes event publishing on PostgreSQL.
const PUBLISH_LOCK: i64 = 0x626f_7572_7365_0001;

/// Events taken by [`Store::unpublished_events`]. Publish them, then call
/// [`EventBatch::mark_published`] with the ids that the broker confirmed; dropping the batch
/// leaves them unpublished for the next round.
pub struct EventBatch {
    pub events: Vec<OrderEvent>,
    inner: BatchInner,
}

enum BatchInner {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(Store),
}

impl EventBatch {
    pub async fn mark_published(self, ids: &[i64]) -> Result<(), StoreError> {
        let now = Utc::now();
        match self.inner {
            BatchInner::Postgres(mut tx) => {
                if !ids.is_empty() {
                    sqlx::query("UPDATE order_events SET published_at = $2 WHERE id = ANY($1)")
                        .bind(ids)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            BatchInner::Sqlite(store) => {
                if ids.is_empty() {
                    return Ok(());
                }
                let Db::Sqlite { write, .. } = &store.db else {
                    unreachable!("a SQLite batch comes from a SQLite store");
                };
                let placeholders = vec!["?"; ids.len()].join(", ");
                let sql = format!(
                    "UPDATE order_events SET published_at = ? WHERE id IN ({placeholders})"
                );
                let mut query = sqlx::query(&sql).bind(micros(now));
                for id in ids {
                    query = query.bind(id);
                }
                query.execute(write).await?;
            }
        }
        Ok(())
    }
}

fn failed_attempt_data(attempt: i32, error: &str, next: Option<DateTime<Utc>>) -> Value {
    json!({
        "attempt": attempt,
        "error": error,
        "next_attempt_at": next.map(rfc3339),
    })
}

async fn insert_pg_event(
    tx: &mut sqlx::Transaction<'_, Postgres>,
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

async fn insert_sqlite_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: Uuid,
    event: &str,
    at: DateTime<Utc>,
    data: &Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO order_events (order_id, event, at, data) VALUES (?, ?, ?, ?)")
        .bind(id.to_string())
        .bind(event)
        .bind(micros(at))
        .bind(data.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn pg_event(r: &sqlx::postgres::PgRow) -> Result<OrderEvent, StoreError> {
    Ok(OrderEvent {
        id: r.try_get(0)?,
        order_id: r.try_get(1)?,
        event: r.try_get(2)?,
        at: r.try_get(3)?,
        data: json_of(&r.try_get::<String, _>(4)?)?,
    })
}

fn sqlite_event(r: &sqlx::sqlite::SqliteRow) -> Result<OrderEvent, StoreError> {
    Ok(OrderEvent {
        id: r.try_get(0)?,
        order_id: uuid(&r.try_get::<String, _>(1)?)?,
        event: r.try_get(2)?,
        at: from_micros(r.try_get(3)?)?,
        data: json_of(&r.try_get::<String, _>(4)?)?,
    })
}
