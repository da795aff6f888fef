//! The quote service proper: validation, cache with single flight, and the
//! `bourse_quote_requests_total{provider,outcome}` metric around the two providers. Transports
//! (in-process, HTTP, AMQP) all end here.

use async_trait::async_trait;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{SingleFlightCache, Source};
use crate::providers::{http_client, AlphaVantage, DailyProvider, QuoteProvider, Stooq};
use crate::{normalize_symbol, DailySummary, Quote, QuoteClient, QuoteConfig, QuoteError};

/// Name of the request counter (docs/operations.md#metrics).
pub const REQUESTS_METRIC: &str = "bourse_quote_requests_total";

/// Describes the metric and registers its main series at zero, so dashboards see it from
/// start-up. Call after installing the recorder; calling again is harmless.
pub fn describe_metrics(providers: &[&'static str]) {
    metrics::describe_counter!(
        REQUESTS_METRIC,
        metrics::Unit::Count,
        "Quote requests answered by the quote service, by provider and outcome (ok, cache_hit or an error code)."
    );
    for provider in providers {
        for outcome in ["ok", "cache_hit"] {
            metrics::counter!(REQUESTS_METRIC, "provider" => *provider, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// Stooq quotes and AlphaVantage summaries, cached per symbol.
pub struct QuoteService {
    quotes: Arc<dyn QuoteProvider>,
    daily: Arc<dyn DailyProvider>,
    quote_cache: SingleFlightCache<Quote>,
    daily_cache: SingleFlightCache<DailySummary>,
}

impl std::fmt::Debug for QuoteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuoteService")
            .field("quotes", &self.quotes.name())
            .field("daily", &self.daily.name())
            .finish_non_exhaustive()
    }
}

impl QuoteService {
    /// The real providers (stooq, AlphaVantage) at the configured URLs.
    pub fn new(config: &QuoteConfig) -> Result<Self, QuoteError> {
        let client = http_client(config.connect_timeout, config.request_timeout)?;
        Ok(Self::with_providers(
            Arc::new(Stooq::new(client.clone(), &config.stooq_url)),
            Arc::new(AlphaVantage::new(
                client,
                &config.alphavantage_url,
                config.alphavantage_key.clone(),
            )),
            config.cache_ttl,
            config.cache_max_bytes,
        ))
    }

    /// Any providers, e.g. test doubles.
    pub fn with_providers(
        quotes: Arc<dyn QuoteProvider>,
        daily: Arc<dyn DailyProvider>,
        cache_ttl: Duration,
        cache_max_bytes: u64,
    ) -> Self {
        describe_metrics(&[quotes.name(), daily.name()]);
        Self {
            quotes,
            daily,
            quote_cache: SingleFlightCache::new(cache_ttl, cache_max_bytes),
            daily_cache: SingleFlightCache::new(cache_ttl, cache_max_bytes),
        }
    }

    /// The stooq quote for `symbol` (any case, e.g. `aapl.us`).
    pub async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        let provider = Arc::clone(&self.quotes);
        let name = provider.name();
        cached(&self.quote_cache, name, symbol, move |key| async move {
            provider.quote(&key).await
        })
        .await
    }

    /// The AlphaVantage daily summary for `symbol` (e.g. `ibm`).
    pub async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        let provider = Arc::clone(&self.daily);
        let name = provider.name();
        cached(&self.daily_cache, name, symbol, move |key| async move {
            provider.daily(&key).await
        })
        .await
    }
}

/// `symbol` normalised, then answered from `cache` or by `fetch`, and counted under `provider`.
async fn cached<V, Fut>(
    cache: &SingleFlightCache<V>,
    provider: &'static str,
    symbol: &str,
    fetch: impl FnOnce(String) -> Fut,
) -> Result<V, QuoteError>
where
    V: Clone + Serialize + Send + Sync + 'static,
    Fut: Future<Output = Result<V, QuoteError>> + Send + 'static,
{
    let answer = match normalize_symbol(symbol) {
        Err(e) => (Err(e), Source::Upstream),
        Ok(key) => {
            let fetch_key = key.clone();
            cache.get_or_fetch(&key, move || fetch(fetch_key)).await
        }
    };
    record(provider, answer)
}

fn record<V>(
    provider: &'static str,
    (result, source): (Result<V, QuoteError>, Source),
) -> Result<V, QuoteError> {
    let outcome = match (&result, source) {
        (Ok(_), Source::Cache) => "cache_hit",
        (Ok(_), Source::Upstream) => "ok",
        (Err(e), _) => e.code(),
    };
    metrics::counter!(REQUESTS_METRIC, "provider" => provider, "outcome" => outcome).increment(1);
    result
}

#[async_trait]
impl QuoteClient for QuoteService {
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        QuoteService::quote(self, symbol).await
    }

    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        QuoteService::daily(self, symbol).await
    }
}
