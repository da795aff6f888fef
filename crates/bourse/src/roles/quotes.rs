//! Wiring of the quote service: its configuration, and which client `serve` uses to reach it.

use crate::config::{Amqp, Quotes};
use anyhow::Context;
use bourse_quotes::amqp::AmqpQuoteClient;
use bourse_quotes::http::HttpQuoteClient;
use bourse_quotes::{AmqpConfig, QuoteClient, QuoteConfig, QuoteService};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The RPC client timeout (docs/api.md): a request never waits longer for the quote service.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn quote_config(config: &Quotes) -> QuoteConfig {
    let defaults = QuoteConfig::default();
    QuoteConfig {
        stooq_url: config.stooq_url.clone(),
        alphavantage_url: config.alphavantage_url.clone(),
        alphavantage_key: config
            .alphavantage_key
            .clone()
            .unwrap_or(defaults.alphavantage_key.clone()),
        cache_ttl: Duration::from_secs(config.quote_cache_secs),
        cache_max_bytes: config.quote_cache_bytes,
        ..defaults
    }
}

pub fn amqp_config(config: &Quotes, url: &str) -> AmqpConfig {
    let mut amqp = AmqpConfig::new(url).with_queue(config.quote_queue.clone());
    amqp.timeout = CLIENT_TIMEOUT;
    amqp.max_batch = config.quote_max_batch.max(1);
    amqp
}

/// The in-process quote service (providers, cache, metrics).
pub fn service(config: &Quotes) -> anyhow::Result<QuoteService> {
    let service =
        QuoteService::new(&quote_config(config)).context("cannot build the quote service")?;
    bourse_quotes::describe_metrics(&["stooq", "alphavantage"]);
    Ok(service)
}

/// Over RabbitMQ when `BOURSE_AMQP_URL` is set, else over HTTP when
/// `BOURSE_QUOTE_SERVICE_URL` is set, else in-process.
pub fn client(config: &Quotes, amqp: &Amqp) -> anyhow::Result<Arc<dyn QuoteClient>> {
    if let Some(url) = &amqp.amqp_url {
        info!(queue = %config.quote_queue, "quotes: RabbitMQ RPC to the quote service");
        return Ok(Arc::new(AmqpQuoteClient::new(amqp_config(
            config,
            url.expose_secret(),
        ))));
    }
    if let Some(url) = &config.quote_service_url {
        info!(url, "quotes: HTTP to the quote service");
        return Ok(Arc::new(
            HttpQuoteClient::new(url, CLIENT_TIMEOUT)
                .context("invalid BOURSE_QUOTE_SERVICE_URL")?,
        ));
    }
    info!("quotes: in-process quote service");
    Ok(Arc::new(service(config)?))
}
