//! The live feed's storage: latest price per stock, every tick, analyst targets, dead letters.
//!
//! [`Store::ingest`] is the one write path of the feed. It stores a batch of ticks, moves each
//! stock's latest price forward (never backward: an older tick arriving late is kept in history
//! but does not overwrite a newer price), and flips analyst targets, all in one transaction, so a
//! consumer that acknowledges the broker after it returns never loses or half-applies a tick.

use crate::retention::{Purge, StoredDeadLetter};
use crate::row::Columns;
use crate::{Store, StoreError};
use async_trait::async_trait;
use bourse_domain::{Analysis, NewAnalysis, TargetType, Tick};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
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
pub(crate) struct StockBatch<'a> {
    pub(crate) latest: &'a Tick,
    highest: &'a Tick,
    lowest: &'a Tick,
}

pub(crate) fn summarize(ticks: &[Tick]) -> BTreeMap<Uuid, StockBatch<'_>> {
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
pub(crate) fn judge(
    pending: &[(Uuid, Analysis)],
    batch: &BTreeMap<Uuid, StockBatch<'_>>,
) -> Vec<TargetHit> {
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

pub(crate) fn kind_of(text: &str) -> Result<TargetType, StoreError> {
    TargetType::parse(text).ok_or_else(|| StoreError::Corrupt(format!("target type {text:?}")))
}

/// The feed's storage, one implementation per engine (see the module doc).
#[async_trait]
pub trait FeedRepo: Send + Sync {
    async fn ingest(&self, batch: IngestBatch<'_>) -> Result<IngestOutcome, StoreError>;
    async fn list_stocks(&self) -> Result<Vec<StockRow>, StoreError>;
    async fn get_stock(&self, id: Uuid) -> Result<Option<StockDetail>, StoreError>;
    async fn list_stocks_with_analysis(&self) -> Result<Vec<StockDetail>, StoreError>;
    async fn set_analysis(
        &self,
        id: Uuid,
        new: NewAnalysis,
    ) -> Result<Option<Analysis>, StoreError>;
    async fn ticks(&self, id: Uuid, span: Span, limit: u32) -> Result<Vec<TickRow>, StoreError>;
    async fn dead_letter_count(&self) -> Result<i64, StoreError>;
    /// [`Store::delete_ticks_before`].
    async fn delete_ticks(&self, id: Uuid, name: &str, batch: Purge) -> Result<u64, StoreError>;
    /// [`Store::delete_dead_letters`], `keep` rows clamped to `i64`.
    async fn delete_dead_letters(&self, batch: Purge, keep: i64) -> Result<u64, StoreError>;
    async fn dead_letters(&self, limit: u32) -> Result<Vec<StoredDeadLetter>, StoreError>;
}

/// A batch for [`Store::ingest`], its ticks free of duplicates.
#[derive(Debug)]
pub struct IngestBatch<'a> {
    pub ticks: Vec<Tick>,
    pub dead: &'a [DeadLetter],
    pub received_at: DateTime<Utc>,
}

/// A closed or open time range `[from, to]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A stock with its analysis, the columns [`detail`] decodes.
pub(crate) const DETAIL_SELECT: &str = "SELECT s.stock_id, s.name, s.price, s.availability, \
     s.price_at, a.target, a.kind, a.target_hit FROM stocks s LEFT JOIN analyses a USING (stock_id)";

/// The columns `stock_id, name, price, availability, price_at`.
pub(crate) fn stock(r: &impl Columns) -> Result<StockRow, StoreError> {
    Ok(StockRow {
        stock_id: r.uuid(0)?,
        name: r.text(1)?,
        price: r.decimal(2)?,
        availability: r.int(3)?,
        price_at: r.instant(4)?,
    })
}

/// The columns of [`DETAIL_SELECT`].
pub(crate) fn detail(r: &impl Columns) -> Result<StockDetail, StoreError> {
    let analysis = match r.opt_decimal(5)? {
        None => None,
        Some(target) => Some(Analysis {
            target,
            kind: kind_of(&r.text(6)?)?,
            target_hit: r.flag(7)?,
        }),
    };
    Ok(StockDetail {
        stock: stock(r)?,
        analysis,
    })
}

/// The columns `price, availability, ts`.
pub(crate) fn tick(r: &impl Columns) -> Result<TickRow, StoreError> {
    Ok(TickRow {
        price: r.decimal(0)?,
        availability: r.int(1)?,
        timestamp: r.instant(2)?,
    })
}

impl Store {
    /// Stores a batch of ticks and dead letters in one transaction. See the module doc.
    pub async fn ingest(
        &self,
        ticks: &[Tick],
        dead: &[DeadLetter],
        received_at: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError> {
        let batch = IngestBatch {
            ticks: dedupe(ticks),
            dead,
            received_at,
        };
        self.feed.ingest(batch).await
    }

    /// All stocks with their latest price, ordered by name.
    pub async fn list_stocks(&self) -> Result<Vec<StockRow>, StoreError> {
        self.feed.list_stocks().await
    }

    /// One stock with its analysis, `None` when unknown.
    pub async fn get_stock(&self, id: Uuid) -> Result<Option<StockDetail>, StoreError> {
        self.feed.get_stock(id).await
    }

    /// All stocks with their latest price and analysis, ordered by name: one query for what
    /// would otherwise take one `get_stock` per stock.
    pub async fn list_stocks_with_analysis(&self) -> Result<Vec<StockDetail>, StoreError> {
        self.feed.list_stocks_with_analysis().await
    }

    /// Replaces the stock's analysis, judged at once against its current price. `None` when the
    /// stock is unknown. The stock row is locked first (the same order as [`Store::ingest`]) so
    /// that a concurrent tick is judged either before or after the new analysis, never lost.
    pub async fn set_analysis(
        &self,
        id: Uuid,
        new: NewAnalysis,
    ) -> Result<Option<Analysis>, StoreError> {
        self.feed.set_analysis(id, new).await
    }

    /// A stock's ticks in `[from, to]`, newest first, at most `limit`.
    pub async fn ticks(
        &self,
        id: Uuid,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<TickRow>, StoreError> {
        self.feed.ticks(id, Span { from, to }, limit).await
    }

    /// How many malformed feed messages were set aside.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        self.feed.dead_letter_count().await
    }
}
