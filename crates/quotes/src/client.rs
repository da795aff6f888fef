//! The one interface the API uses to get quotes, whatever the wiring: in-process
//! ([`crate::QuoteService`]), HTTP ([`crate::http::HttpQuoteClient`]) or RabbitMQ RPC
//! ([`crate::amqp::AmqpQuoteClient`]). Embedded and distributed modes thus share all API code.

use async_trait::async_trait;
use std::sync::Arc;

use crate::{DailySummary, Quote, QuoteError};

/// Gets quotes from the quote service, wherever it runs.
#[async_trait]
pub trait QuoteClient: Send + Sync {
    /// stooq quote, e.g. for `aapl.us`.
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError>;
    /// AlphaVantage daily summary, e.g. for `ibm`.
    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError>;
}

#[async_trait]
impl<T: QuoteClient + ?Sized> QuoteClient for Arc<T> {
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        (**self).quote(symbol).await
    }

    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        (**self).daily(symbol).await
    }
}
