//! Money is a decimal, never a binary float: `1.57` must stay `1.57` from the wire to storage and
//! back. JSON output renders integers as integers (`28`, as the feed's clients expect) and other values
//! through their shortest float form, which is exact for any price with fewer than 16 digits.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use std::str::FromStr;

pub type Price = Decimal;

/// Largest price a client may send (a limit price, an analyst target): far above any share
/// price, and well inside what every engine stores exactly. Documented in the OpenAPI schemas.
pub const MAX_PRICE: i64 = 1_000_000_000;

/// Checks a client's price: `> 0`, at most [`MAX_PRICE`], at most `decimals` decimal places.
pub fn check_price(price: Decimal, decimals: u32) -> Result<Decimal, &'static str> {
    let price = price.normalize();
    if price <= Decimal::ZERO {
        Err("must be greater than 0")
    } else if price > Decimal::from(MAX_PRICE) {
        Err("must be at most 1000000000")
    } else if price.scale() > decimals {
        Err(if decimals == 2 {
            "must have at most 2 decimals"
        } else {
            "must have at most 8 decimals"
        })
    } else {
        Ok(price)
    }
}

/// Parses a decimal from JSON-number text, including exponents (`1e3`) that `Decimal::from_str`
/// rejects.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()
}

/// Converts a JSON number to a decimal without going through the float's binary value.
pub fn decimal_from_json_number(n: &serde_json::Number) -> Option<Decimal> {
    if let Some(i) = n.as_i64() {
        return Some(Decimal::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(Decimal::from(u));
    }
    // serde_json prints floats in their shortest round-trip form, so this recovers what was sent.
    parse_decimal(&n.to_string())
}

/// Serde helper: `#[serde(serialize_with = "bourse_domain::money::as_number")]`.
pub fn as_number<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    let normalized = value.normalize();
    if normalized.scale() == 0 {
        if let Some(i) = normalized.to_i64() {
            return serializer.serialize_i64(i);
        }
    }
    match normalized.to_f64() {
        Some(f) => serializer.serialize_f64(f),
        None => normalized.to_string().serialize(serializer),
    }
}

/// Like [`as_number`] for optional values.
pub fn as_number_opt<S: Serializer>(
    value: &Option<Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => as_number(v, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct P(#[serde(serialize_with = "as_number")] Decimal);

    fn render(s: &str) -> String {
        serde_json::to_string(&P(Decimal::from_str(s).unwrap())).unwrap()
    }

    #[test]
    fn integers_render_as_integers() {
        assert_eq!(render("28"), "28");
        assert_eq!(render("28.000000"), "28");
    }

    #[test]
    fn decimals_render_without_float_noise() {
        assert_eq!(render("1.57"), "1.57");
        assert_eq!(render("130.79"), "130.79");
        assert_eq!(render("0.1"), "0.1");
        assert_eq!(render("123.660000"), "123.66");
    }

    #[test]
    fn json_numbers_convert_exactly() {
        let n: serde_json::Number = serde_json::from_str("28.1").unwrap();
        assert_eq!(decimal_from_json_number(&n), Decimal::from_str("28.1").ok());
        let n: serde_json::Number = serde_json::from_str("1e3").unwrap();
        assert_eq!(decimal_from_json_number(&n), Some(Decimal::from(1000)));
    }

    #[test]
    fn parse_decimal_rejects_garbage() {
        assert_eq!(parse_decimal("abc"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal(" 12.5 "), Decimal::from_str("12.5").ok());
    }
}
