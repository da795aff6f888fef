//! Placing stored orders at the exchange, exactly once.
//!
//! - [`Exchange`]: the adapter the relay places through, with the order id as idempotency key.
//!   [`SimulatedExchange`] mimics seed 002's flaky `place_order` in-process, and is also what
//!   `bourse exchange` serves over HTTP ([`simulated::router`]); [`HttpExchange`] is its client.
//! - [`Relay`]: claims due outbox rows, places many orders at once (bounded), records each
//!   outcome with its event, retries with exponential backoff and jitter, gives up after the
//!   configured number of attempts.
//! - [`EventPublisher`]: publishes stored order events to the RabbitMQ topic exchange
//!   `bourse.events`, marking them published only once the broker confirmed them.
//! - [`metrics`]: the order metrics of SPEC ("Operations").

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
