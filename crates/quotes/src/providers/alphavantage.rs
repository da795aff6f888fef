//! AlphaVantage: `GET {base}/query?function=TIME_SERIES_DAILY&symbol=…&apikey=…`. Like stooq it
//! answers 200 for everything; the body says what happened ("Error Message", "Note",
//! "Information", or the series). The variation is computed on decimals so IBM's example gives
//! exactly `1.57`, not the float noise `1.5699999999999932`.

use async_trait::async_trait;
use bourse_domain::money::parse_decimal;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{encode_query_value, fetch_text, snippet, DailyProvider};
use crate::{normalize_symbol, DailySummary, QuoteError};

const PROVIDER: &str = "alphavantage";

/// The AlphaVantage provider.
#[derive(Debug, Clone)]
pub struct AlphaVantage {
    client: reqwest::Client,
    base_url: String,
    api_key: SecretString,
}

impl AlphaVantage {
    pub fn new(client: reqwest::Client, base_url: &str, api_key: SecretString) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        }
    }

    /// The URL asked for `symbol` (already normalized); AlphaVantage codes are uppercase.
    pub fn url(&self, symbol: &str) -> String {
        format!(
            "{}/query?function=TIME_SERIES_DAILY&symbol={}&apikey={}",
            self.base_url,
            encode_query_value(&symbol.to_ascii_uppercase()),
            encode_query_value(self.api_key.expose_secret())
        )
    }
}

#[async_trait]
impl DailyProvider for AlphaVantage {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        let symbol = normalize_symbol(symbol)?;
        let body = fetch_text(&self.client, PROVIDER, &self.url(&symbol)).await?;
        parse_alphavantage_daily(&body, &symbol)
    }
}

/// Parses a `TIME_SERIES_DAILY` answer into the `GET /symbol/{symbol}` summary of its last trading day.
///
/// - `"Error Message"` → `not_found`; `"Note"` / `"Information"` → `throttled`; both keep the
///   upstream text as the message;
/// - no series, fewer than two days, a non-numeric price → `bad_upstream` (a variation needs
///   two closes; the contract does not allow inventing one).
///
/// `requested` is used as the symbol when the meta data lacks one.
pub fn parse_alphavantage_daily(body: &str, requested: &str) -> Result<DailySummary, QuoteError> {
    let value: Value =
        serde_json::from_str(body).map_err(|_| bad("a body that is not JSON", body))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("a body that is not an object", body))?;
    if let Some(text) = object.get("Error Message") {
        return Err(QuoteError::NotFound(text_of(text)));
    }
    for key in ["Note", "Information"] {
        if let Some(text) = object.get(key) {
            return Err(QuoteError::Throttled(text_of(text)));
        }
    }
    let series = object
        .get("Time Series (Daily)")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no daily series", body))?;
    let mut days: Vec<(NaiveDate, &Map<String, Value>)> = Vec::with_capacity(series.len());
    for (date, bar) in series {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| bad("a series key that is not a date", body))?;
        let bar = bar
            .as_object()
            .ok_or_else(|| bad("a bar that is not an object", body))?;
        days.push((date, bar));
    }
    days.sort_by_key(|(date, _)| *date);
    let [.., (_, previous), (last_date, last)] = days.as_slice() else {
        return Err(bad("fewer than two trading days", body));
    };

    let field = |bar: &Map<String, Value>, key: &str| -> Result<(String, Decimal), QuoteError> {
        let text = bar
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("a bar without {key}"), body))?;
        let number =
            parse_decimal(text).ok_or_else(|| bad(&format!("a non-numeric {key}"), body))?;
        Ok((text.to_owned(), number))
    };
    let (open_value, _) = field(last, "1. open")?;
    let (high_value, _) = field(last, "2. high")?;
    let (low_value, _) = field(last, "3. low")?;
    let (close_value, close) = field(last, "4. close")?;
    let (_, previous_close) = field(previous, "4. close")?;

    let meta = object.get("Meta Data").and_then(Value::as_object);
    let meta_text = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(DailySummary {
        symbol: meta_text("2. Symbol").unwrap_or_else(|| requested.to_ascii_uppercase()),
        last_refreshed: meta_text("3. Last Refreshed")
            .unwrap_or_else(|| last_date.format("%Y-%m-%d").to_string()),
        open_value,
        high_value,
        low_value,
        close_value,
        variation_between_last_two_days: (close - previous_close).normalize(),
    })
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn bad(what: &str, body: &str) -> QuoteError {
    tracing::warn!(provider = PROVIDER, body = %snippet(body), "unusable answer: {what}");
    QuoteError::BadUpstream(format!("{PROVIDER} answered {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const IBM: &str = r#"{
        "Meta Data": {"1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": "IBM", "3. Last Refreshed": "2022-07-29", "4. Output Size": "Compact",
            "5. Time Zone": "US/Eastern"},
        "Time Series (Daily)": {
            "2022-07-27": {"1. open": "128.4400", "2. high": "129.4500", "3. low": "127.5300", "4. close": "128.0800", "5. volume": "3654654"},
            "2022-07-29": {"1. open": "129.5200", "2. high": "131.0000", "3. low": "129.3100", "4. close": "130.7900", "5. volume": "5786815"},
            "2022-07-28": {"1. open": "128.0000", "2. high": "129.4000", "3. low": "127.5900", "4. close": "129.2200", "5. volume": "4023876"}
        }}"#;

    #[test]
    fn ibm_gives_exactly_one_fifty_seven() {
        let s = parse_alphavantage_daily(IBM, "ibm").unwrap();
        assert_eq!(s.symbol, "IBM");
        assert_eq!(s.last_refreshed, "2022-07-29");
        assert_eq!(s.open_value, "129.5200");
        assert_eq!(s.high_value, "131.0000");
        assert_eq!(s.low_value, "129.3100");
        assert_eq!(s.close_value, "130.7900");
        assert_eq!(
            s.variation_between_last_two_days,
            Decimal::from_str("1.57").unwrap()
        );
        assert_eq!(s.variation_between_last_two_days.to_string(), "1.57");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["variation_between_last_two_days"].to_string(), "1.57");
    }

    #[test]
    fn error_message_is_not_found_with_upstream_text() {
        let body = r#"{"Error Message": "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."}"#;
        let err = parse_alphavantage_daily(body, "nope").unwrap_err();
        assert_eq!(err.code(), "not_found");
        assert!(err.message().starts_with("Invalid API call."));
    }

    #[test]
    fn note_and_information_are_throttled_with_upstream_text() {
        for key in ["Note", "Information"] {
            let body = format!(
                r#"{{"{key}": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."}}"#
            );
            let err = parse_alphavantage_daily(&body, "ibm").unwrap_err();
            assert_eq!(err.code(), "throttled");
            assert_eq!(err.http_status(), 503);
            assert!(err
                .message()
                .starts_with("Thank you for using Alpha Vantage!"));
        }
    }

    #[test]
    fn missing_meta_falls_back_to_the_request_and_the_last_day() {
        let body = r#"{"Time Series (Daily)": {
            "2024-01-02": {"1. open": "1", "2. high": "2", "3. low": "0.5", "4. close": "1.10"},
            "2024-01-03": {"1. open": "1", "2. high": "2", "3. low": "0.5", "4. close": "1.00"}}}"#;
        let s = parse_alphavantage_daily(body, "abc").unwrap();
        assert_eq!(s.symbol, "ABC");
        assert_eq!(s.last_refreshed, "2024-01-03");
        assert_eq!(
            s.variation_between_last_two_days,
            Decimal::from_str("-0.1").unwrap()
        );
    }

    #[test]
    fn garbage_is_bad_upstream() {
        for body in [
            "",
            "<html></html>",
            "[]",
            "{}",
            r#"{"Time Series (Daily)": {}}"#,
            r#"{"Time Series (Daily)": {"2024-01-02": {"1. open": "1", "2. high": "2", "3. low": "0.5", "4. close": "1"}}}"#,
            r#"{"Time Series (Daily)": {"x": {}, "2024-01-02": {}}}"#,
            r#"{"Time Series (Daily)": {"2024-01-01": {"4. close": "1"}, "2024-01-02": {"1. open": "x", "2. high": "2", "3. low": "0.5", "4. close": "1"}}}"#,
        ] {
            let err = parse_alphavantage_daily(body, "ibm").unwrap_err();
            assert_eq!(err.code(), "bad_upstream", "{body}: {err:?}");
        }
    }

    #[test]
    fn url_encodes_symbol_and_key() {
        let av = AlphaVantage::new(reqwest::Client::new(), "http://x/", "k&y".into());
        assert_eq!(
            av.url("ibm"),
            "http://x/query?function=TIME_SERIES_DAILY&symbol=IBM&apikey=k%26y"
        );
    }
}
