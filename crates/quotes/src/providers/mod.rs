//! Upstream providers behind two small traits, so the service (cache, single flight, metrics)
//! is written once and tests can swap in fakes. Parsing is pure and lives next to each provider.

pub mod alphavantage;
pub mod stooq;

use async_trait::async_trait;
use std::time::Duration;

use crate::{DailySummary, Quote, QuoteError};

pub use alphavantage::{parse_alphavantage_daily, AlphaVantage};
pub use stooq::{parse_stooq_csv, Stooq};

/// A source of [`Quote`]s (stooq).
#[async_trait]
pub trait QuoteProvider: Send + Sync + 'static {
    /// Label of the `provider` metric dimension.
    fn name(&self) -> &'static str;
    /// `symbol` is as [`crate::normalize_symbol`] returns it.
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError>;
}

/// A source of [`DailySummary`]s (AlphaVantage).
#[async_trait]
pub trait DailyProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError>;
}

/// Largest upstream body we read. Real answers are a few KiB (stooq) or tens of KiB
/// (AlphaVantage compact); anything bigger is not what we asked for.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// One reqwest client for all providers, with both timeouts set: a provider that accepts the
/// connection and then stalls must not hold a request forever.
pub fn http_client(
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<reqwest::Client, QuoteError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .user_agent(concat!("bourse/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot build the HTTP client");
            QuoteError::Unavailable("HTTP client unavailable".into())
        })
}

/// GETs `url` and returns the body of a 2xx answer; every failure is mapped to a [`QuoteError`]
/// whose message names the provider but no internals (those are logged).
pub(crate) async fn fetch_text(
    client: &reqwest::Client,
    provider: &'static str,
    url: &str,
) -> Result<String, QuoteError> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| transport_error(provider, e))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(provider, e))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            tracing::warn!(provider, "upstream body larger than {MAX_BODY_BYTES} bytes");
            return Err(QuoteError::BadUpstream(format!(
                "{provider} answered an oversized body"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(QuoteError::Throttled(format!(
            "{provider} is throttling requests"
        )));
    }
    if !status.is_success() {
        tracing::warn!(provider, %status, body = %snippet(&text), "upstream answered an error status");
        return Err(QuoteError::BadUpstream(format!(
            "{provider} answered HTTP {}",
            status.as_u16()
        )));
    }
    Ok(text)
}

/// Maps a reqwest failure: timeouts (connect or total) → `timeout`, unreachable → `unavailable`,
/// anything else (broken body, redirect loop) → `bad_upstream`. The error is logged without its
/// URL, which carries AlphaVantage's API key.
pub(crate) fn transport_error(provider: &'static str, error: reqwest::Error) -> QuoteError {
    let error = error.without_url();
    tracing::warn!(provider, error = ?error, "upstream request failed");
    if error.is_timeout() {
        QuoteError::Timeout(format!("{provider} did not answer in time"))
    } else if error.is_connect() {
        QuoteError::Unavailable(format!("{provider} is unreachable"))
    } else {
        QuoteError::BadUpstream(format!("{provider} answered unreadably"))
    }
}

/// The start of a body, for logs.
pub(crate) fn snippet(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(200)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    &text[..end]
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for hand-built query
/// strings (stooq wants a bare `&h` flag, which form encoders cannot produce).
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("aapl.us"), "aapl.us");
        assert_eq!(encode_query_value("^spx"), "%5Espx");
        assert_eq!(encode_query_value("a=b&c"), "a%3Db%26c");
    }

    #[test]
    fn snippet_cuts_on_char_boundaries() {
        let long = "é".repeat(300);
        assert_eq!(snippet(&long).chars().count(), 200);
        assert_eq!(snippet("short"), "short");
    }
}
