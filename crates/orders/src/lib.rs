//! Placing stored orders at the exchange, exactly once.
//!
//! - [`Exchange`]: the adapter the relay places through, with the order id as idempotency key.
//!   [`SimulatedExchange`] mimics a flaky exchange (10% failures, 0.5 s a call) in-process, and
//!   is also what `bourse exchange` serves over HTTP ([`simulated::router`]); [`HttpExchange`]
//!   is its client.
//! - [`Relay`]: claims due outbox rows, places many orders at once (bounded), records each
//!   outcome with its event, retries with exponential backoff and jitter, gives up after the
//!   configured number of attempts.
//! - [`EventPublisher`]: publishes stored order events to the RabbitMQ topic exchange
//!   `bourse.events`, marking them published only once the broker confirmed them.
//! - [`metrics`]: the order metrics (docs/operations.md#metrics).
//!
//! ```no_run
//! # async fn example() -> Result<(), bourse_orders::ExchangeError> {
//! use bourse_domain::order::{OrderType, Side};
//! use bourse_orders::{Exchange, PlacementRequest, SimulatedExchange};
//! use std::time::Duration;
//!
//! let exchange = SimulatedExchange::new(0.1, Duration::from_millis(500));
//! let order_id = uuid::Uuid::new_v4();
//! let request = PlacementRequest {
//!     order_id,
//!     instrument: "EGS60121C018".into(),
//!     side: Side::Buy,
//!     kind: OrderType::Market,
//!     limit_price: None,
//!     quantity: 100,
//! };
//! // Placing the same key again returns the first placement: never placed twice.
//! let first = exchange.place(&order_id.to_string(), &request).await?;
//! let again = exchange.place(&order_id.to_string(), &request).await?;
//! assert!(again.duplicate && again.placed_at == first.placed_at);
//! # Ok(()) }
//! ```

pub mod exchange;
pub mod http;
pub mod metrics;
pub mod publisher;
pub mod relay;
pub mod simulated;

pub use exchange::{Exchange, ExchangeError, PlacementRequest, Receipt};
pub use http::HttpExchange;
pub use publisher::{EventPublisher, PublisherConfig, EVENTS_EXCHANGE};
pub use relay::{Relay, RelayConfig};
pub use simulated::SimulatedExchange;
