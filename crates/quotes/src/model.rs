//! What the quote service answers, and the symbol rule every entry point applies before any
//! upstream call (so a malformed symbol never costs upstream quota nor pollutes the cache).

use bourse_domain::money::as_number;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::QuoteError;

/// A stooq quote. Prices are exact decimals, rendered as JSON numbers on the wire; `date` and
/// `time` are the upstream text (`2023-11-27`, `22:00:13`), passed through untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// As upstream returns it: uppercase (`AAPL.US`).
    pub symbol: String,
    /// Company name, may hold `&` or commas (`AT&T`).
    pub name: String,
    pub date: String,
    pub time: String,
    #[serde(serialize_with = "as_number")]
    pub open: Decimal,
    #[serde(serialize_with = "as_number")]
    pub high: Decimal,
    #[serde(serialize_with = "as_number")]
    pub low: Decimal,
    #[serde(serialize_with = "as_number")]
    pub close: Decimal,
    /// Traded volume; `None` when upstream has none (`N/D` or empty, e.g. currencies).
    pub volume: Option<u64>,
}

/// An AlphaVantage daily summary, as `GET /symbol/{symbol}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailySummary {
    /// As upstream reports it in its meta data (`IBM`).
    pub symbol: String,
    pub last_refreshed: String,
    /// Upstream strings, passed through (`"130.7900"`).
    pub open_value: String,
    pub high_value: String,
    pub low_value: String,
    pub close_value: String,
    /// Last close minus the previous trading day's close, exact (`1.57`).
    #[serde(serialize_with = "as_number")]
    pub variation_between_last_two_days: Decimal,
}

/// Which answer is wanted: a stooq quote or an AlphaVantage daily summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Quote,
    Daily,
}

/// Longest accepted symbol; real codes are far shorter (`10usy.b`, `^spx`, `brk-b.us`).
pub const MAX_SYMBOL_LEN: usize = 32;

/// Trims the symbol and checks it only holds characters that stock codes use: ASCII letters,
/// digits and `. ^ - _ =`, with at least one letter or digit. Returns the trimmed symbol,
/// lowercased, which is also the cache key and what is sent upstream.
pub fn normalize_symbol(raw: &str) -> Result<String, QuoteError> {
    let symbol = raw.trim();
    if symbol.is_empty() {
        return Err(QuoteError::BadRequest("symbol is required".into()));
    }
    if symbol.len() > MAX_SYMBOL_LEN {
        return Err(QuoteError::BadRequest(format!(
            "symbol is longer than {MAX_SYMBOL_LEN} characters"
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '^' | '-' | '_' | '=');
    if !symbol.chars().all(allowed) || !symbol.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(QuoteError::BadRequest(
            "symbol may only hold letters, digits and . ^ - _ =".into(),
        ));
    }
    Ok(symbol.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn accepts_real_codes() {
        for code in [
            "aapl.us", "AAPL.US", " ibm ", "^spx", "brk-b.us", "10usy.b", "eurusd",
        ] {
            assert!(normalize_symbol(code).is_ok(), "{code}");
        }
        assert_eq!(normalize_symbol(" AAPL.US ").unwrap(), "aapl.us");
    }

    #[test]
    fn rejects_weird_symbols() {
        for code in [
            "", "   ", "...", "a b", "aapl&x=1", "a/b", "a,b", "ä", "a+b", "%41",
        ] {
            let err = normalize_symbol(code).unwrap_err();
            assert_eq!(err.code(), "bad_request", "{code}");
        }
        assert!(normalize_symbol(&"a".repeat(MAX_SYMBOL_LEN + 1)).is_err());
    }

    #[test]
    fn decimals_go_out_as_exact_json_numbers_and_come_back() {
        let summary = DailySummary {
            symbol: "IBM".into(),
            last_refreshed: "2022-07-29".into(),
            open_value: "129.5200".into(),
            high_value: "131.0000".into(),
            low_value: "129.3100".into(),
            close_value: "130.7900".into(),
            variation_between_last_two_days: Decimal::from_str("1.5700").unwrap(),
        };
        let json = serde_json::to_string(&summary).unwrap();
        assert!(
            json.contains(r#""variation_between_last_two_days":1.57"#),
            "{json}"
        );
        let back: DailySummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn kind_defaults_to_quote() {
        assert_eq!(Kind::default(), Kind::Quote);
        let k: Kind = serde_json::from_str(r#""daily""#).unwrap();
        assert_eq!(k, Kind::Daily);
    }
}
