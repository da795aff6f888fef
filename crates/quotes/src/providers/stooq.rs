//! stooq: `GET {base}/q/l/?s={code}&f=sd2t2ohlcvn&h&e=csv`, a header line and one CSV row with
//! CRLF line ends. stooq never says "not found" with a status: an unknown code is a 200 row of
//! `N/D`, and its daily limit is a 200 plain-text sentence. Both are recognised here.

use async_trait::async_trait;
use bourse_domain::money::parse_decimal;
use rust_decimal::Decimal;

use super::{encode_query_value, fetch_text, snippet, QuoteProvider};
use crate::{normalize_symbol, Quote, QuoteError};

const PROVIDER: &str = "stooq";
/// What stooq says, as plain text, once the caller's daily quota is used up.
pub const THROTTLE_TEXT: &str = "Exceeded the daily hits limit";
/// Column order that `f=sd2t2ohlcvn` asks for, used when the header is missing.
const DEFAULT_COLUMNS: [&str; 9] = [
    "symbol", "date", "time", "open", "high", "low", "close", "volume", "name",
];

/// The stooq provider.
#[derive(Debug, Clone)]
pub struct Stooq {
    client: reqwest::Client,
    base_url: String,
}

impl Stooq {
    /// `base_url` like `https://stooq.com` (a trailing slash is fine).
    pub fn new(client: reqwest::Client, base_url: &str) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The exact URL asked for `symbol` (already normalized).
    pub fn url(&self, symbol: &str) -> String {
        format!(
            "{}/q/l/?s={}&f=sd2t2ohlcvn&h&e=csv",
            self.base_url,
            encode_query_value(symbol)
        )
    }
}

#[async_trait]
impl QuoteProvider for Stooq {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        let symbol = normalize_symbol(symbol)?;
        let body = fetch_text(&self.client, PROVIDER, &self.url(&symbol)).await?;
        parse_stooq_csv(&body)
    }
}

/// Parses stooq's answer for one symbol.
///
/// - throttle text → `throttled` (the text is kept as the message);
/// - `N/D` prices → `not_found`;
/// - a missing row, a missing column or a non-numeric price → `bad_upstream`.
///
/// The name is the last column and is not quoted by stooq, so extra fields (a name with a
/// comma) are joined back into it; quoted fields are understood too.
pub fn parse_stooq_csv(body: &str) -> Result<Quote, QuoteError> {
    let body = body.trim_start_matches('\u{feff}');
    if body
        .to_ascii_lowercase()
        .contains(&THROTTLE_TEXT.to_ascii_lowercase())
    {
        let text = body.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(QuoteError::Throttled(
            text.unwrap_or(THROTTLE_TEXT).to_owned(),
        ));
    }
    let mut lines = body
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or_else(|| bad("an empty body", body))?;
    let (columns, row) = if first.to_ascii_lowercase().starts_with("symbol,") {
        let columns: Vec<String> = split_csv(first)
            .into_iter()
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let row = lines.next().ok_or_else(|| bad("no data row", body))?;
        (columns, row)
    } else {
        (
            DEFAULT_COLUMNS.iter().map(|c| c.to_string()).collect(),
            first,
        )
    };
    let mut fields = split_csv(row);
    if fields.len() > columns.len() && columns.last().map(String::as_str) == Some("name") {
        let tail = fields.split_off(columns.len() - 1).join(",");
        fields.push(tail);
    }
    if fields.len() != columns.len() {
        return Err(bad("a malformed row", body));
    }
    let field = |name: &str| -> Result<&str, QuoteError> {
        columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| fields.get(i))
            .map(|f| f.trim())
            .ok_or_else(|| bad(&format!("no {name} column"), body))
    };

    let symbol = field("symbol")?.to_owned();
    if symbol.is_empty() {
        return Err(bad("an empty symbol", body));
    }
    let prices = ["open", "high", "low", "close"];
    for p in prices {
        if is_no_data(field(p)?) {
            return Err(QuoteError::NotFound(format!("Unknown symbol: {symbol}")));
        }
    }
    let price = |name: &str| -> Result<Decimal, QuoteError> {
        let text = field(name)?;
        parse_decimal(text).ok_or_else(|| bad(&format!("a non-numeric {name}"), body))
    };
    Ok(Quote {
        name: field("name")?.to_owned(),
        date: field("date")?.to_owned(),
        time: field("time")?.to_owned(),
        open: price("open")?,
        high: price("high")?,
        low: price("low")?,
        close: price("close")?,
        volume: parse_volume(field("volume")?).ok_or_else(|| bad("a non-numeric volume", body))?,
        symbol,
    })
}

fn is_no_data(value: &str) -> bool {
    value.is_empty() || value.eq_ignore_ascii_case("n/d")
}

/// `Some(None)` when stooq has no volume for the instrument, `None` when it is garbage.
fn parse_volume(text: &str) -> Option<Option<u64>> {
    if is_no_data(text) {
        return Some(None);
    }
    if let Ok(v) = text.parse::<u64>() {
        return Some(Some(v));
    }
    // Some instruments report fractional volumes; keep the whole units.
    let d = parse_decimal(text)?;
    if d.is_sign_negative() {
        return None;
    }
    rust_decimal::prelude::ToPrimitive::to_u64(&d.trunc()).map(Some)
}

fn bad(what: &str, body: &str) -> QuoteError {
    tracing::warn!(provider = PROVIDER, body = %snippet(body), "unusable answer: {what}");
    QuoteError::BadUpstream(format!("{PROVIDER} answered {what}"))
}

/// Splits one CSV line; `"..."` fields may hold commas and `""` escapes.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if current.is_empty() => quoted = true,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    fields.push(current);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const HEADER: &str = "Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\n";

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn parses_the_spec_example() {
        let body = format!(
            "{HEADER}AAPL.US,2023-11-27,22:00:13,189.92,190.67,188.9,189.79,30984740,APPLE\r\n"
        );
        let q = parse_stooq_csv(&body).unwrap();
        assert_eq!(q.symbol, "AAPL.US");
        assert_eq!(q.name, "APPLE");
        assert_eq!(q.date, "2023-11-27");
        assert_eq!(q.time, "22:00:13");
        assert_eq!(q.open, d("189.92"));
        assert_eq!(q.high, d("190.67"));
        assert_eq!(q.low, d("188.9"));
        assert_eq!(q.close, d("189.79"));
        assert_eq!(q.volume, Some(30984740));
    }

    #[test]
    fn unknown_symbol_is_not_found() {
        let body = format!("{HEADER}APPL.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,APPL.US\r\n");
        let err = parse_stooq_csv(&body).unwrap_err();
        assert_eq!(err, QuoteError::NotFound("Unknown symbol: APPL.US".into()));
    }

    #[test]
    fn throttle_text_is_throttled_with_upstream_text() {
        let err = parse_stooq_csv("Exceeded the daily hits limit\r\n").unwrap_err();
        assert_eq!(err, QuoteError::Throttled(THROTTLE_TEXT.into()));
        assert_eq!(err.http_status(), 503);
    }

    #[test]
    fn names_keep_ampersands_and_commas() {
        let body = format!("{HEADER}T.US,2023-11-27,22:00:05,16.4,16.5,16.3,16.45,1000,AT&T\r\n");
        assert_eq!(parse_stooq_csv(&body).unwrap().name, "AT&T");
        let body = format!("{HEADER}X.US,2023-11-27,22:00:05,1,2,0.5,1.5,7,FOO, INC.\r\n");
        assert_eq!(parse_stooq_csv(&body).unwrap().name, "FOO, INC.");
        let body =
            format!("{HEADER}X.US,2023-11-27,22:00:05,1,2,0.5,1.5,7,\"BAR, \"\"B\"\" & C\"\r\n");
        assert_eq!(parse_stooq_csv(&body).unwrap().name, "BAR, \"B\" & C");
    }

    #[test]
    fn lf_only_bom_and_missing_header_are_tolerated() {
        let body = "\u{feff}Symbol,Date,Time,Open,High,Low,Close,Volume,Name\nMSFT.US,2023-11-27,22:00:09,376.78,380.64,376.2,378.61,22877420,MICROSOFT\n";
        assert_eq!(parse_stooq_csv(body).unwrap().symbol, "MSFT.US");
        let body = "MSFT.US,2023-11-27,22:00:09,376.78,380.64,376.2,378.61,22877420,MICROSOFT\r\n";
        assert_eq!(parse_stooq_csv(body).unwrap().close, d("378.61"));
    }

    #[test]
    fn missing_volume_is_none() {
        let body = format!(
            "{HEADER}EURUSD,2023-11-27,22:59:58,1.0945,1.0964,1.0934,1.0953,N/D,EUR/USD\r\n"
        );
        assert_eq!(parse_stooq_csv(&body).unwrap().volume, None);
        let body = format!("{HEADER}BTC.V,2023-11-27,22:59:58,1,2,0.5,1.5,12.75,BITCOIN\r\n");
        assert_eq!(parse_stooq_csv(&body).unwrap().volume, Some(12));
    }

    #[test]
    fn garbage_is_bad_upstream() {
        for body in [
            "",
            "\r\n",
            "<html>maintenance</html>",
            "Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\n",
            "Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\nAAPL.US,2023-11-27,22:00:13,abc,190.67,188.9,189.79,1,APPLE\r\n",
            "Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\nAAPL.US,2023-11-27,22:00:13,1,2,3,4,-5,APPLE\r\n",
        ] {
            let err = parse_stooq_csv(body).unwrap_err();
            assert_eq!(err.code(), "bad_upstream", "{body:?} gave {err:?}");
        }
    }

    #[test]
    fn url_has_the_bare_h_flag_and_encodes_the_code() {
        let stooq = Stooq::new(reqwest::Client::new(), "http://x/");
        assert_eq!(
            stooq.url("aapl.us"),
            "http://x/q/l/?s=aapl.us&f=sd2t2ohlcvn&h&e=csv"
        );
        assert_eq!(
            stooq.url("^spx"),
            "http://x/q/l/?s=%5Espx&f=sd2t2ohlcvn&h&e=csv"
        );
    }
}
