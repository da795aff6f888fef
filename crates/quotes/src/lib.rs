//! The quote service's core, independent of the HTTP API and of the database.
//!
//! - [`providers`]: stooq (CSV) and AlphaVantage (JSON) behind [`QuoteProvider`] and
//!   [`DailyProvider`], with pure, tested parsers.
//! - [`QuoteService`]: validation, a per-symbol cache of successful answers with single flight,
//!   and the `bourse_quote_requests_total{provider,outcome}` metric.
//! - [`QuoteClient`]: how the API asks for quotes, implemented in-process ([`QuoteService`]), over
//!   HTTP ([`http::HttpQuoteClient`], served by [`http::router`]) and over RabbitMQ RPC
//!   ([`amqp::AmqpQuoteClient`], served by [`amqp::AmqpServer`]).
//! - `fake`: a local fake of both providers for tests and demos (cargo feature `fake`).
//!
//! ```no_run
//! # async fn example() -> Result<(), bourse_quotes::QuoteError> {
//! use bourse_quotes::{QuoteClient, QuoteConfig, QuoteService};
//!
//! let service = QuoteService::new(&QuoteConfig::default())?; // stooq.com, alphavantage.co
//! let quote = service.quote("aapl.us").await?;
//! println!("{} ({}): {}", quote.symbol, quote.name, quote.close);
//! # Ok(()) }
//! ```

pub mod amqp;
mod cache;
mod client;
mod config;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod http;
mod model;
pub mod providers;
mod service;
pub mod wire;

pub use client::QuoteClient;
pub use config::{AmqpConfig, QuoteConfig};
pub use error::{ErrorBody, QuoteError};
pub use model::{normalize_symbol, DailySummary, Kind, Quote, MAX_SYMBOL_LEN};
pub use providers::{DailyProvider, QuoteProvider};
pub use service::{describe_metrics, QuoteService, REQUESTS_METRIC};
