//! The live feed's storage: latest price per stock, every tick, analyst targets, dead letters.
//!
//! [`Store::ingest`] is the one write path of the feed. It stores a batch of ticks, moves each
//! stock's latest price forward (never backward: an older tick arriving late is kept in history
//! but does not overwrite a newer price), and flips analyst targets, all in one transaction, so a
//! consumer that acknowledges the broker after it returns never loses or half-applies a tick.

use crate::sqlite_codec::{decimal, from_micros, micros, uuid};
use crate::{Db, Store, StoreError};
use bourse_domain::{Analysis, NewAnalysis, TargetType, Tick};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct StockRow {
    pub stock_id: Uuid,
    pub name: String,
    pub price: Decimal,
    pub availability: i64,
    pub price_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StockDetail {
    pub stock: StockRow,
    pub analysis: Option<Analysis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TickRow {
    pub price: Decimal,
    pub availability: i64,
    pub timestamp: DateTime<Utc>,
}

/// A feed message that could not be parsed, kept with its bytes for later inspection.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub source: String,
    pub payload: Vec<u8>,
    pub reason: String,
    pub received_at: DateTime<Utc>,
}

/// A target that a tick of the batch reached.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHit {
    pub stock_id: Uuid,
    pub target: Decimal,
    pub kind: TargetType,
    pub price: Decimal,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Ticks stored for the first time (duplicates of stored ticks are left out).
    pub new_ticks: Vec<Tick>,
    pub hits: Vec<TargetHit>,
}

/// Per-stock summary of the new ticks of a batch: what the latest price may become, and the
/// extremes that decide target hits.
struct StockBatch<'a> {
    latest: &'a Tick,
    highest: &'a Tick,
    lowest: &'a Tick,
}

fn summarize(ticks: &[Tick]) -> BTreeMap<Uuid, StockBatch<'_>> {
    let mut by_stock: BTreeMap<Uuid, StockBatch<'_>> = BTreeMap::new();
    for t in ticks {
        by_stock
            .entry(t.stock_id)
            .and_modify(|s| {
                if t.timestamp >= s.latest.timestamp {
                    s.latest = t;
                }
                if t.price > s.highest.price {
                    s.highest = t;
                }
                if t.price < s.lowest.price {
                    s.lowest = t;
                }
            })
            .or_insert(StockBatch {
                latest: t,
                highest: t,
                lowest: t,
            });
    }
    by_stock
}

/// Which pending targets the batch reaches, judged by the domain rule on the batch's extremes.
fn judge(pending: &[(Uuid, Analysis)], batch: &BTreeMap<Uuid, StockBatch<'_>>) -> Vec<TargetHit> {
    pending
        .iter()
        .filter_map(|(id, analysis)| {
            let s = batch.get(id)?;
            let decisive = match analysis.kind {
                TargetType::Up => s.highest,
                TargetType::Down => s.lowest,
            };
            analysis.newly_hit_by(decisive.price).then_some(TargetHit {
                stock_id: *id,
                target: analysis.target,
                kind: analysis.kind,
                price: decisive.price,
                timestamp: decisive.timestamp,
            })
        })
        .collect()
}

fn dedupe(ticks: &[Tick]) -> Vec<Tick> {
    let mut seen = HashSet::with_capacity(ticks.len());
    ticks
        .iter()
        .filter(|t| seen.insert((t.stock_id, t.timestamp)))
        .cloned()
        .collect()
}

fn kind_of(text: &str) -> Result<TargetType, StoreError> {
    TargetType::parse(text).ok_or_else(|| StoreError::Corrupt(format!("target type {text:?}")))
}

impl Store {
    /// Stores a batch of ticks and dead letters in one transaction. See the module doc.
    pub async fn ingest(
        &self,
        ticks: &[Tick],
        dead: &[DeadLetter],
        received_at: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError> {
        let ticks = dedupe(ticks);
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let mut outcome = IngestOutcome::default();
                if !ticks.is_empty() {
                    let ids: Vec<Uuid> = ticks.iter().map(|t| t.stock_id).collect();
                    let ts: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.timestamp).collect();
                    let prices: Vec<Decimal> = ticks.iter().map(|t| t.price).collect();
                    let avail: Vec<i64> = ticks.iter().map(|t| t.availability).collect();
                    let inserted: HashSet<(Uuid, DateTime<Utc>)> = sqlx::query(
                        "INSERT INTO ticks (stock_id, ts, price, availability, received_at) \
                         SELECT u.*, $5 FROM UNNEST($1::uuid[], $2::timestamptz[], $3::numeric[], $4::int8[]) AS u \
                         ON CONFLICT DO NOTHING RETURNING stock_id, ts",
                    )
                    .bind(&ids)
                    .bind(&ts)
                    .bind(&prices)
                    .bind(&avail)
                    .bind(received_at)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()?;
                    outcome.new_ticks = ticks
                        .into_iter()
                        .filter(|t| inserted.contains(&(t.stock_id, t.timestamp)))
                        .collect();
                }
                // Only the ticks stored for the first time count, so a redelivered batch does
                // not count twice; same transaction, so bars and ticks commit together.
                crate::bars::roll_up_pg(&mut tx, &outcome.new_ticks).await?;
                let batch = summarize(&outcome.new_ticks);
                if !batch.is_empty() {
                    // Sorted by stock id (BTreeMap) so that concurrent ingestors lock stock rows
                    // in the same order and cannot deadlock.
                    let latest: Vec<&Tick> = batch.values().map(|s| s.latest).collect();
                    sqlx::query(
                        "INSERT INTO stocks (stock_id, name, price, availability, price_at) \
                         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::int8[], $5::timestamptz[]) \
                         ON CONFLICT (stock_id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, \
                           availability = EXCLUDED.availability, price_at = EXCLUDED.price_at, updated_at = now() \
                         WHERE stocks.price_at <= EXCLUDED.price_at",
                    )
                    .bind(latest.iter().map(|t| t.stock_id).collect::<Vec<_>>())
                    .bind(latest.iter().map(|t| t.name.clone()).collect::<Vec<_>>())
                    .bind(latest.iter().map(|t| t.price).collect::<Vec<_>>())
                    .bind(latest.iter().map(|t| t.availability).collect::<Vec<_>>())
                    .bind(latest.iter().map(|t| t.timestamp).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await?;
                    let ids: Vec<Uuid> = batch.keys().copied().collect();
                    let pending = sqlx::query(
                        "SELECT stock_id, target, kind FROM analyses \
                         WHERE stock_id = ANY($1) AND NOT target_hit ORDER BY stock_id FOR UPDATE",
                    )
                    .bind(&ids)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|r| {
                        let kind: String = r.try_get(2)?;
                        Ok((
                            r.try_get::<Uuid, _>(0)?,
                            Analysis {
                                target: r.try_get(1)?,
                                kind: kind_of(&kind)?,
                                target_hit: false,
                            },
                        ))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                    outcome.hits = judge(&pending, &batch);
                    for hit in &outcome.hits {
                        sqlx::query(
                            "UPDATE analyses SET target_hit = true, hit_price = $2, hit_at = $3 WHERE stock_id = $1",
                        )
                        .bind(hit.stock_id)
                        .bind(hit.price)
                        .bind(hit.timestamp)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if !dead.is_empty() {
                    sqlx::query(
                        "INSERT INTO dead_letters (source, payload, reason, received_at) \
                         SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::timestamptz[])",
                    )
                    .bind(dead.iter().map(|d| d.source.clone()).collect::<Vec<_>>())
                    .bind(dead.iter().map(|d| d.payload.clone()).collect::<Vec<_>>())
                    .bind(dead.iter().map(|d| d.reason.clone()).collect::<Vec<_>>())
                    .bind(dead.iter().map(|d| d.received_at).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                let mut outcome = IngestOutcome::default();
                let received = micros(received_at);
                for t in ticks {
                    let done = sqlx::query(
                        "INSERT OR IGNORE INTO ticks (stock_id, ts, price, availability, received_at) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(t.stock_id.to_string())
                    .bind(micros(t.timestamp))
                    .bind(t.price.to_string())
                    .bind(t.availability)
                    .bind(received)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 1 {
                        outcome.new_ticks.push(t);
                    }
                }
                crate::bars::roll_up_sqlite(&mut tx, &outcome.new_ticks).await?;
                let batch = summarize(&outcome.new_ticks);
                let mut pending = Vec::new();
                for (id, s) in &batch {
                    let t = s.latest;
                    sqlx::query(
                        "INSERT INTO stocks (stock_id, name, price, availability, price_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
                         ON CONFLICT (stock_id) DO UPDATE SET name = excluded.name, price = excluded.price, \
                           availability = excluded.availability, price_at = excluded.price_at, updated_at = excluded.updated_at \
                         WHERE stocks.price_at <= excluded.price_at",
                    )
                    .bind(id.to_string())
                    .bind(&t.name)
                    .bind(t.price.to_string())
                    .bind(t.availability)
                    .bind(micros(t.timestamp))
                    .bind(received)
                    .execute(&mut *tx)
                    .await?;
                    let row = sqlx::query(
                        "SELECT target, kind FROM analyses WHERE stock_id = ? AND target_hit = 0",
                    )
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(r) = row {
                        let target: String = r.try_get(0)?;
                        let kind: String = r.try_get(1)?;
                        pending.push((
                            *id,
                            Analysis {
                                target: decimal(&target)?,
                                kind: kind_of(&kind)?,
                                target_hit: false,
                            },
                        ));
                    }
                }
                outcome.hits = judge(&pending, &batch);
                for hit in &outcome.hits {
                    sqlx::query(
                        "UPDATE analyses SET target_hit = 1, hit_price = ?, hit_at = ? WHERE stock_id = ?",
                    )
                    .bind(hit.price.to_string())
                    .bind(micros(hit.timestamp))
                    .bind(hit.stock_id.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                for d in dead {
                    sqlx::query(
                        "INSERT INTO dead_letters (source, payload, reason, received_at) VALUES (?, ?, ?, ?)",
                    )
                    .bind(&d.source)
                    .bind(&d.payload)
                    .bind(&d.reason)
                    .bind(micros(d.received_at))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }
        }
    }

    /// All stocks with their latest price, ordered by name.
    pub async fn list_stocks(&self) -> Result<Vec<StockRow>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "SELECT stock_id, name, price, availability, price_at FROM stocks ORDER BY name, stock_id",
            )
            .fetch_all(pool)
            .await?
            .iter()
            .map(pg_stock)
            .collect(),
            Db::Sqlite { read, .. } => sqlx::query(
                "SELECT stock_id, name, price, availability, price_at FROM stocks ORDER BY name, stock_id",
            )
            .fetch_all(read)
            .await?
            .iter()
            .map(sqlite_stock)
            .collect(),
        }
    }

    /// One stock with its analysis, `None` when unknown.
    pub async fn get_stock(&self, id: Uuid) -> Result<Option<StockDetail>, StoreError> {
        let sql = format!("{DETAIL_SELECT} WHERE s.stock_id = $1");
        match &self.db {
            Db::Postgres(pool) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(pg_detail)
                .transpose(),
            Db::Sqlite { read, .. } => sqlx::query(&sql.replace("$1", "?"))
                .bind(id.to_string())
                .fetch_optional(read)
                .await?
                .as_ref()
                .map(sqlite_detail)
                .transpose(),
        }
    }

    /// All stocks with their latest price and analysis, ordered by name: one query for what
    /// would otherwise take one `get_stock` per stock.
    pub async fn list_stocks_with_analysis(&self) -> Result<Vec<StockDetail>, StoreError> {
        let sql = format!("{DETAIL_SELECT} ORDER BY s.name, s.stock_id");
        match &self.db {
            Db::Postgres(pool) => sqlx::query(&sql)
                .fetch_all(pool)
                .await?
                .iter()
                .map(pg_detail)
                .collect(),
            Db::Sqlite { read, .. } => sqlx::query(&sql)
                .fetch_all(read)
                .await?
                .iter()
                .map(sqlite_detail)
                .collect(),
        }
    }

    /// Replaces the stock's analysis, judged at once against its current price. `None` when the
    /// stock is unknown. The stock row is locked first (the same order as [`Store::ingest`]) so
    /// that a concurrent tick is judged either before or after the new analysis, never lost.
    pub async fn set_analysis(
        &self,
        id: Uuid,
        new: NewAnalysis,
    ) -> Result<Option<Analysis>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let Some(row) = sqlx::query(
                    "SELECT price, price_at FROM stocks WHERE stock_id = $1 FOR UPDATE",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(None);
                };
                let price: Decimal = row.try_get(0)?;
                let price_at: DateTime<Utc> = row.try_get(1)?;
                let analysis = new.evaluate(Some(price));
                sqlx::query(
                    "INSERT INTO analyses (stock_id, target, kind, target_hit, hit_price, hit_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, now()) \
                     ON CONFLICT (stock_id) DO UPDATE SET target = EXCLUDED.target, kind = EXCLUDED.kind, \
                       target_hit = EXCLUDED.target_hit, hit_price = EXCLUDED.hit_price, hit_at = EXCLUDED.hit_at, \
                       created_at = EXCLUDED.created_at",
                )
                .bind(id)
                .bind(analysis.target)
                .bind(analysis.kind.as_str())
                .bind(analysis.target_hit)
                .bind(analysis.target_hit.then_some(price))
                .bind(analysis.target_hit.then_some(price_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(analysis))
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                let Some(row) =
                    sqlx::query("SELECT price, price_at FROM stocks WHERE stock_id = ?")
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?
                else {
                    return Ok(None);
                };
                let price = decimal(&row.try_get::<String, _>(0)?)?;
                let price_at: i64 = row.try_get(1)?;
                let analysis = new.evaluate(Some(price));
                sqlx::query(
                    "INSERT INTO analyses (stock_id, target, kind, target_hit, hit_price, hit_at, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (stock_id) DO UPDATE SET target = excluded.target, kind = excluded.kind, \
                       target_hit = excluded.target_hit, hit_price = excluded.hit_price, hit_at = excluded.hit_at, \
                       created_at = excluded.created_at",
                )
                .bind(id.to_string())
                .bind(analysis.target.to_string())
                .bind(analysis.kind.as_str())
                .bind(i64::from(analysis.target_hit))
                .bind(analysis.target_hit.then(|| price.to_string()))
                .bind(analysis.target_hit.then_some(price_at))
                .bind(micros(Utc::now()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(analysis))
            }
        }
    }

    /// A stock's ticks in `[from, to]`, newest first, at most `limit`.
    pub async fn ticks(
        &self,
        id: Uuid,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<TickRow>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "SELECT price, availability, ts FROM ticks WHERE stock_id = $1 \
                 AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts <= $3) \
                 ORDER BY ts DESC LIMIT $4",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(TickRow {
                    price: r.try_get(0)?,
                    availability: r.try_get(1)?,
                    timestamp: r.try_get(2)?,
                })
            })
            .collect(),
            Db::Sqlite { read, .. } => sqlx::query(
                "SELECT price, availability, ts FROM ticks WHERE stock_id = ? \
                 AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?",
            )
            .bind(id.to_string())
            .bind(from.map_or(i64::MIN, micros))
            .bind(to.map_or(i64::MAX, micros))
            .bind(i64::from(limit))
            .fetch_all(read)
            .await?
            .iter()
            .map(|r| {
                Ok(TickRow {
                    price: decimal(&r.try_get::<String, _>(0)?)?,
                    availability: r.try_get(1)?,
                    timestamp: from_micros(r.try_get(2)?)?,
                })
            })
            .collect(),
        }
    }

    /// How many malformed feed messages were set aside.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM dead_letters";
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Db::Sqlite { read, .. } => sqlx::query_scalar(sql).fetch_one(read).await?,
        })
    }
}

/// A stock with its analysis, the columns `pg_detail` and `sqlite_detail` decode.
const DETAIL_SELECT: &str = "SELECT s.stock_id, s.name, s.price, s.availability, s.price_at, \
     a.target, a.kind, a.target_hit FROM stocks s LEFT JOIN analyses a USING (stock_id)";

fn pg_detail(r: &sqlx::postgres::PgRow) -> Result<StockDetail, StoreError> {
    let analysis = match r.try_get::<Option<Decimal>, _>(5)? {
        None => None,
        Some(target) => Some(Analysis {
            target,
            kind: kind_of(&r.try_get::<String, _>(6)?)?,
            target_hit: r.try_get(7)?,
        }),
    };
    Ok(StockDetail {
        stock: pg_stock(r)?,
        analysis,
    })
}

fn sqlite_detail(r: &sqlx::sqlite::SqliteRow) -> Result<StockDetail, StoreError> {
    let analysis = match r.try_get::<Option<String>, _>(5)? {
        None => None,
        Some(target) => Some(Analysis {
            target: decimal(&target)?,
            kind: kind_of(&r.try_get::<String, _>(6)?)?,
            target_hit: r.try_get::<i64, _>(7)? != 0,
        }),
    };
    Ok(StockDetail {
        stock: sqlite_stock(r)?,
        analysis,
    })
}

fn pg_stock(r: &sqlx::postgres::PgRow) -> Result<StockRow, StoreError> {
    Ok(StockRow {
        stock_id: r.try_get(0)?,
        name: r.try_get(1)?,
        price: r.try_get(2)?,
        availability: r.try_get(3)?,
        price_at: r.try_get(4)?,
    })
}

fn sqlite_stock(r: &sqlx::sqlite::SqliteRow) -> Result<StockRow, StoreError> {
    Ok(StockRow {
        stock_id: uuid(&r.try_get::<String, _>(0)?)?,
        name: r.try_get(1)?,
        price: decimal(&r.try_get::<String, _>(2)?)?,
        availability: r.try_get(3)?,
        price_at: from_micros(r.try_get(4)?)?,
    })
}
