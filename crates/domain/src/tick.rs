//! A price tick from the live feed, parsed tolerantly but never loosely: every accepted field is
//! checked, and anything else is a [`TickError`] that names why, so that the consumer can count and
//! set the message aside instead of crashing or guessing.

use crate::money::{decimal_from_json_number, parse_decimal, Price};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest stock name accepted; longer ones are almost certainly garbage.
pub const MAX_NAME_LEN: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub stock_id: Uuid,
    pub name: String,
    pub price: Price,
    pub availability: i64,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickError {
    #[error("payload is not JSON or a Python dict: {0}")]
    Syntax(String),
    #[error("payload is not an object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("invalid field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    #[error("payload of {size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("timestamp {0} is before 1970 or too far ahead of the receive time")]
    TimestampOutOfRange(DateTime<Utc>),
}

impl TickError {
    /// A short, fixed label for metrics (`bourse_ticks_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            TickError::Syntax(_) => "syntax",
            TickError::NotAnObject => "not_object",
            TickError::Missing(_) => "missing_field",
            TickError::Invalid { .. } => "invalid_field",
            TickError::TooLarge { .. } => "too_large",
            TickError::TimestampOutOfRange(_) => "timestamp_out_of_range",
        }
    }
}

/// What a feed message must fit before it is stored: a tick is a few hundred bytes, and its
/// timestamp lies between 1970 and a little after it was received (clocks drift; the future does
/// not arrive early). A far-future tick would otherwise hold a stock's latest price forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLimits {
    pub max_bytes: usize,
    pub max_skew: TimeDelta,
}

impl Default for TickLimits {
    fn default() -> Self {
        TickLimits {
            max_bytes: 4096,
            max_skew: TimeDelta::minutes(5),
        }
    }
}

fn invalid(field: &'static str, message: &'static str) -> TickError {
    TickError::Invalid { field, message }
}

impl Tick {
    /// Parses one feed message. `received_at` stands in for a missing timestamp.
    pub fn parse(payload: &[u8], received_at: DateTime<Utc>) -> Result<Tick, TickError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| TickError::Syntax("payload is not UTF-8".into()))?;
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json_err) => {
                // The original streamer is suspected to send `str(dict)`; accept that form only
                // when the payload really looks like one.
                let converted = python_literal_to_json(text)
                    .ok_or_else(|| TickError::Syntax(json_err.to_string()))?;
                serde_json::from_str(&converted).map_err(|e| TickError::Syntax(e.to_string()))?
            }
        };
        let Value::Object(map) = value else {
            return Err(TickError::NotAnObject);
        };
        Self::from_map(&map, received_at)
    }

    /// [`Tick::parse`] within `limits`: the size is checked before any parsing, the timestamp
    /// after.
    pub fn parse_within(
        payload: &[u8],
        received_at: DateTime<Utc>,
        limits: &TickLimits,
    ) -> Result<Tick, TickError> {
        if payload.len() > limits.max_bytes {
            return Err(TickError::TooLarge {
                size: payload.len(),
                limit: limits.max_bytes,
            });
        }
        let tick = Self::parse(payload, received_at)?;
        let latest = received_at
            .checked_add_signed(limits.max_skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if tick.timestamp < DateTime::UNIX_EPOCH || tick.timestamp > latest {
            return Err(TickError::TimestampOutOfRange(tick.timestamp));
        }
        Ok(tick)
    }

    fn from_map(map: &Map<String, Value>, received_at: DateTime<Utc>) -> Result<Tick, TickError> {
        let stock_id = match map.get("stock_id") {
            None | Some(Value::Null) => return Err(TickError::Missing("stock_id")),
            Some(Value::String(s)) => {
                Uuid::parse_str(s.trim()).map_err(|_| invalid("stock_id", "not a UUID"))?
            }
            Some(_) => return Err(invalid("stock_id", "not a string")),
        };
        let name = match map.get("name") {
            None | Some(Value::Null) => return Err(TickError::Missing("name")),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() {
                    return Err(invalid("name", "empty"));
                }
                if s.chars().count() > MAX_NAME_LEN || s.chars().any(char::is_control) {
                    return Err(invalid("name", "too long or has control characters"));
                }
                s.to_string()
            }
            Some(_) => return Err(invalid("name", "not a string")),
        };
        let price = match map.get("price") {
            None | Some(Value::Null) => return Err(TickError::Missing("price")),
            Some(Value::Number(n)) => {
                decimal_from_json_number(n).ok_or_else(|| invalid("price", "not a decimal"))?
            }
            Some(Value::String(s)) => {
                parse_decimal(s).ok_or_else(|| invalid("price", "not a number"))?
            }
            Some(_) => return Err(invalid("price", "not a number")),
        };
        if price < Decimal::ZERO {
            return Err(invalid("price", "negative"));
        }
        let availability = match map.get("availability") {
            None | Some(Value::Null) => return Err(TickError::Missing("availability")),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| invalid("availability", "not an integer"))?,
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid("availability", "not an integer"))?,
            Some(_) => return Err(invalid("availability", "not an integer")),
        };
        if availability < 0 {
            return Err(invalid("availability", "negative"));
        }
        let timestamp = match map.get("timestamp") {
            None | Some(Value::Null) => received_at,
            Some(Value::String(s)) => {
                parse_timestamp(s).ok_or_else(|| invalid("timestamp", "unrecognised format"))?
            }
            Some(_) => return Err(invalid("timestamp", "not a string")),
        };
        Ok(Tick {
            stock_id,
            name,
            price,
            availability,
            timestamp,
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (naive, taken as UTC; a `T` separator is fine too) or RFC 3339.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|n| n.and_utc())
}

/// Rewrites a Python literal (`{'a': 'b', 'c': True}`) into JSON. Returns `None` when the text
/// does not look like a Python dict at all, so JSON's own error message is kept for real garbage.
fn python_literal_to_json(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return None;
    }
    let mut out = String::with_capacity(trimmed.len() + 8);
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let quote = c;
                out.push('"');
                loop {
                    let ch = chars.next()?; // unterminated string: not a literal
                    match ch {
                        '\\' => {
                            let escaped = chars.next()?;
                            match escaped {
                                '\'' => out.push('\''),
                                '"' => out.push_str("\\\""),
                                other => {
                                    out.push('\\');
                                    out.push(other);
                                }
                            }
                        }
                        ch if ch == quote => break,
                        '"' => out.push_str("\\\""),
                        ch => out.push(ch),
                    }
                }
                out.push('"');
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(match word.as_str() {
                    "True" => "true",
                    "False" => "false",
                    "None" => "null",
                    _ => return None,
                });
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
    }

    const ID: &str = "6ffb8e62-92c1-40c7-9d38-5b976a346b62";

    #[test]
    fn parses_the_seed_message() {
        let msg = format!(
            r#"{{"stock_id": "{ID}", "name": "CIB", "price": 28, "availability": 46, "timestamp": "2019-12-15 14:36:33.462393"}}"#
        );
        let t = Tick::parse(msg.as_bytes(), now()).unwrap();
        assert_eq!(t.stock_id, Uuid::parse_str(ID).unwrap());
        assert_eq!(t.name, "CIB");
        assert_eq!(t.price, Decimal::from(28));
        assert_eq!(t.availability, 46);
        assert_eq!(t.timestamp.to_rfc3339(), "2019-12-15T14:36:33.462393+00:00");
    }

    #[test]
    fn accepts_python_dict_payloads() {
        let msg = format!(
            "{{'stock_id': '{ID}', 'name': 'Hamada Inc', 'price': 12.5, 'availability': 3, 'timestamp': '2019-12-15 14:36:33'}}"
        );
        let t = Tick::parse(msg.as_bytes(), now()).unwrap();
        assert_eq!(t.name, "Hamada Inc");
        assert_eq!(t.price, Decimal::from_str("12.5").unwrap());
    }

    #[test]
    fn python_strings_may_hold_the_other_quote() {
        let msg = format!(
            "{{'stock_id': '{ID}', 'name': \"O'Brien \\\"Co\\\"\", 'price': '1.25', 'availability': '3', 'extra': None}}"
        );
        let t = Tick::parse(msg.as_bytes(), now()).unwrap();
        assert_eq!(t.name, "O'Brien \"Co\"");
        assert_eq!(t.price, Decimal::from_str("1.25").unwrap());
        assert_eq!(t.availability, 3);
        assert_eq!(
            t.timestamp,
            now(),
            "missing timestamp falls back to receive time"
        );
    }

    #[test]
    fn accepts_rfc3339_and_numeric_strings() {
        let msg = format!(
            r#"{{"stock_id": "{ID}", "name": "CIB", "price": "28.10", "availability": 0, "timestamp": "2020-01-01T10:00:00+02:00"}}"#
        );
        let t = Tick::parse(msg.as_bytes(), now()).unwrap();
        assert_eq!(t.price, Decimal::from_str("28.10").unwrap());
        assert_eq!(t.timestamp.to_rfc3339(), "2020-01-01T08:00:00+00:00");
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "syntax"),
            ("[1,2]".into(), "not_object"),
            ("{'a': undefined}".into(), "syntax"),
            (
                r#"{"name":"CIB","price":1,"availability":1}"#.into(),
                "missing_field",
            ),
            (
                r#"{"stock_id":"nope","name":"CIB","price":1,"availability":1}"#.into(),
                "invalid_field",
            ),
            (
                format!(r#"{{"stock_id":"{ID}","name":"CIB","price":-1,"availability":1}}"#),
                "invalid_field",
            ),
            (
                format!(r#"{{"stock_id":"{ID}","name":"CIB","price":"x","availability":1}}"#),
                "invalid_field",
            ),
            (
                format!(r#"{{"stock_id":"{ID}","name":"CIB","price":1,"availability":1.5}}"#),
                "invalid_field",
            ),
            (
                format!(r#"{{"stock_id":"{ID}","name":"CIB","price":1,"availability":-2}}"#),
                "invalid_field",
            ),
            (
                format!(r#"{{"stock_id":"{ID}","name":"","price":1,"availability":1}}"#),
                "invalid_field",
            ),
            (
                format!(
                    r#"{{"stock_id":"{ID}","name":"CIB","price":1,"availability":1,"timestamp":"yesterday"}}"#
                ),
                "invalid_field",
            ),
        ];
        for (payload, reason) in cases {
            let err = Tick::parse(payload.as_bytes(), now()).unwrap_err();
            assert_eq!(err.reason(), reason, "payload {payload}: {err}");
        }
        assert_eq!(
            Tick::parse(&[0xff, 0xfe], now()).unwrap_err().reason(),
            "syntax"
        );
    }

    #[test]
    fn limits_refuse_oversized_payloads_and_timestamps_out_of_range() {
        let limits = TickLimits {
            max_bytes: 200,
            max_skew: TimeDelta::minutes(5),
        };
        let at = |ts: &str| {
            format!(
                r#"{{"stock_id":"{ID}","name":"CIB","price":1,"availability":1,"timestamp":"{ts}"}}"#
            )
        };
        for ts in [
            "-5000-01-01 00:00:00",
            "1969-12-31 23:59:59",
            "9999-12-31 00:00:00",
            "2024-01-02 03:09:06",
        ] {
            let err = Tick::parse_within(at(ts).as_bytes(), now(), &limits).unwrap_err();
            assert_eq!(err.reason(), "timestamp_out_of_range", "{ts}: {err}");
        }
        for ts in [
            "1970-01-01 00:00:00",
            "2024-01-02 03:09:05",
            "2019-12-15 14:36:33",
        ] {
            Tick::parse_within(at(ts).as_bytes(), now(), &limits).unwrap();
        }
        let big = format!("{}{}", at("2020-01-01 00:00:00"), " ".repeat(200));
        let err = Tick::parse_within(big.as_bytes(), now(), &limits).unwrap_err();
        assert_eq!(
            err,
            TickError::TooLarge {
                size: big.len(),
                limit: 200
            }
        );
        assert_eq!(err.reason(), "too_large");
    }

    #[test]
    fn python_conversion_refuses_non_dicts() {
        assert_eq!(python_literal_to_json("hello"), None);
        assert_eq!(python_literal_to_json("{'a': 'unterminated}"), None);
        assert_eq!(
            python_literal_to_json("{'a': True, 'b': False}").as_deref(),
            Some(r#"{"a": true, "b": false}"#)
        );
    }
}
