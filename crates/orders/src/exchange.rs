//! The exchange as the relay sees it.

use async_trait::async_trait;
use bourse_domain::money::as_number_opt;
use bourse_domain::order::{OrderType, Side};
use bourse_store::orders::Order;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The body of a placement (`POST /placements`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementRequest {
    pub order_id: Uuid,
    pub instrument: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub kind: OrderType,
    #[serde(serialize_with = "as_number_opt", default)]
    pub limit_price: Option<Decimal>,
    pub quantity: i64,
}

impl From<&Order> for PlacementRequest {
    fn from(o: &Order) -> Self {
        PlacementRequest {
            order_id: o.id,
            instrument: o.order.instrument.as_str().to_string(),
            side: o.order.side,
            kind: o.order.order_type(),
            limit_price: o.order.limit_price(),
            quantity: o.order.quantity.get(),
        }
    }
}

/// The exchange's confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub order_id: Uuid,
    /// When the exchange placed the order (the first time, for a duplicate).
    pub placed_at: DateTime<Utc>,
    /// The idempotency key had been placed before: this is that first placement.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The exchange answered that it could not place the order now (a simulated random failure).
    #[error("exchange rejected the placement: {0}")]
    Rejected(String),
    /// No answer in time.
    #[error("exchange did not answer in time")]
    Timeout,
    /// The exchange could not be reached.
    #[error("exchange unreachable: {0}")]
    Unreachable(String),
    /// An answer that the contract does not allow.
    #[error("unexpected exchange answer: {0}")]
    Protocol(String),
}

/// Places orders. `key` is the idempotency key (the order id): placing a key again returns the
/// first placement (`duplicate`) and never places the order twice.
#[async_trait]
pub trait Exchange: Send + Sync {
    async fn place(&self, key: &str, request: &PlacementRequest) -> Result<Receipt, ExchangeError>;
}
