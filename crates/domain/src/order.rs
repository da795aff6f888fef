//! Orders as clients post them, parsed into types that cannot hold an invalid order,
//! and the retry schedule of their placement at the exchange.
//!
//! Rules: `type` `market` or `limit`; `side` `buy` or `sell`; `instrument` exactly 12 characters
//! (ISIN-sized); `quantity` an integer > 0; `limit_price` a decimal > 0 with at most 2 decimals,
//! required for `limit` orders and forbidden for `market` orders. Every violated rule is reported
//! as a field error, so a client learns about every bad field at once.

use crate::money::{decimal_from_json_number, Price};
use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Length of an instrument code (an ISIN has 12 characters).
pub const INSTRUMENT_LEN: usize = 12;
/// Most decimals a limit price may have.
pub const PRICE_DECIMALS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    Market,
    Limit,
}

impl OrderType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Market => "market",
            OrderType::Limit => "limit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "market" => Some(OrderType::Market),
            "limit" => Some(OrderType::Limit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }
}

/// Where an order stands. `pending` until the exchange confirmed it (`placed`) or the relay gave
/// up after the configured number of attempts (`failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Placed,
    Failed,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 3] = [
        OrderStatus::Pending,
        OrderStatus::Placed,
        OrderStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Placed => "placed",
            OrderStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(OrderStatus::Pending),
            "placed" => Some(OrderStatus::Placed),
            "failed" => Some(OrderStatus::Failed),
            _ => None,
        }
    }
}

/// The names of the events in an order's history (and the AMQP routing keys).
pub mod events {
    pub const CREATED: &str = "order.created";
    pub const PLACEMENT_FAILED: &str = "order.placement_failed";
    pub const PLACED: &str = "order.placed";
    pub const FAILED: &str = "order.failed";
}

/// An instrument code of exactly [`INSTRUMENT_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Instrument(String);

impl Instrument {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.chars().count() != INSTRUMENT_LEN {
            Err("must be exactly 12 characters")
        } else if text.chars().any(char::is_control) {
            // PostgreSQL's text refuses NUL; no instrument code holds a control character.
            Err("must not contain control characters")
        } else {
            Ok(Instrument(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number of shares, > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(i64);

impl Quantity {
    pub fn new(n: i64) -> Result<Self, &'static str> {
        if n > 0 {
            Ok(Quantity(n))
        } else {
            Err("must be greater than 0")
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A limit price: > 0, at most [`PRICE_DECIMALS`] decimals, kept normalized (`1.50` is `1.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitPrice(Price);

impl LimitPrice {
    pub fn new(price: Price) -> Result<Self, &'static str> {
        crate::money::check_price(price, PRICE_DECIMALS).map(LimitPrice)
    }

    pub fn get(self) -> Price {
        self.0
    }
}

/// How an order is priced: the type and the limit price travel together, so that a market order
/// with a price or a limit order without one cannot exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pricing {
    Market,
    Limit(LimitPrice),
}

impl Pricing {
    pub fn order_type(self) -> OrderType {
        match self {
            Pricing::Market => OrderType::Market,
            Pricing::Limit(_) => OrderType::Limit,
        }
    }

    pub fn limit_price(self) -> Option<Price> {
        match self {
            Pricing::Market => None,
            Pricing::Limit(p) => Some(p.get()),
        }
    }

    /// Rebuilds the pricing from stored columns.
    pub fn from_parts(kind: OrderType, limit_price: Option<Price>) -> Result<Self, &'static str> {
        match (kind, limit_price) {
            (OrderType::Market, None) => Ok(Pricing::Market),
            (OrderType::Limit, Some(p)) => LimitPrice::new(p).map(Pricing::Limit),
            (OrderType::Market, Some(_)) => Err("a market order has no limit price"),
            (OrderType::Limit, None) => Err("a limit order needs a limit price"),
        }
    }
}

/// A valid order as a client posted it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewOrder {
    pub pricing: Pricing,
    pub side: Side,
    pub instrument: Instrument,
    pub quantity: Quantity,
}

impl NewOrder {
    /// Validates a JSON body (see the module doc). Unknown keys are ignored; `null` counts as
    /// absent.
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = body.as_object() else {
            errors.push("body", "must be a JSON object");
            return Err(errors);
        };
        let field = |name: &str| obj.get(name).filter(|v| !v.is_null());

        let kind = match field("type") {
            None => {
                errors.push("type", "is required");
                None
            }
            Some(v) => {
                let kind = v.as_str().and_then(OrderType::parse);
                if kind.is_none() {
                    errors.push("type", "must be \"market\" or \"limit\"");
                }
                kind
            }
        };
        let side = match field("side") {
            None => {
                errors.push("side", "is required");
                None
            }
            Some(v) => {
                let side = v.as_str().and_then(Side::parse);
                if side.is_none() {
                    errors.push("side", "must be \"buy\" or \"sell\"");
                }
                side
            }
        };
        let instrument = match field("instrument") {
            None => {
                errors.push("instrument", "is required");
                None
            }
            Some(Value::String(s)) => match Instrument::parse(s) {
                Ok(i) => Some(i),
                Err(m) => {
                    errors.push("instrument", m);
                    None
                }
            },
            Some(_) => {
                errors.push("instrument", "must be a string of exactly 12 characters");
                None
            }
        };
        let quantity = match field("quantity") {
            None => {
                errors.push("quantity", "is required");
                None
            }
            Some(Value::Number(n)) => {
                // `2.0` is the integer 2 to JSON Schema, as to most JSON writers.
                let whole = n
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64);
                if let Some(i) = n.as_i64().or(whole) {
                    match Quantity::new(i) {
                        Ok(q) => Some(q),
                        Err(m) => {
                            errors.push("quantity", m);
                            None
                        }
                    }
                } else if n.is_u64() {
                    errors.push("quantity", "is too large");
                    None
                } else {
                    errors.push("quantity", "must be an integer");
                    None
                }
            }
            Some(_) => {
                errors.push("quantity", "must be an integer");
                None
            }
        };
        let price = match field("limit_price") {
            None => None,
            Some(Value::Number(n)) => match decimal_from_json_number(n) {
                Some(d) => match LimitPrice::new(d) {
                    Ok(p) => Some(Ok(p)),
                    Err(m) => {
                        errors.push("limit_price", m);
                        Some(Err(()))
                    }
                },
                None => {
                    errors.push("limit_price", "must be a decimal number");
                    Some(Err(()))
                }
            },
            Some(_) => {
                errors.push("limit_price", "must be a number");
                Some(Err(()))
            }
        };
        let pricing = match (kind, price) {
            (Some(OrderType::Market), None) => Some(Pricing::Market),
            (Some(OrderType::Market), Some(_)) => {
                if !errors.0.iter().any(|e| e.field == "limit_price") {
                    errors.push("limit_price", "must not be given for a market order");
                }
                None
            }
            (Some(OrderType::Limit), None) => {
                errors.push("limit_price", "is required for a limit order");
                None
            }
            (Some(OrderType::Limit), Some(Ok(p))) => Some(Pricing::Limit(p)),
            (Some(OrderType::Limit), Some(Err(()))) | (None, _) => None,
        };
        match (pricing, side, instrument, quantity) {
            (Some(pricing), Some(side), Some(instrument), Some(quantity)) if errors.is_empty() => {
                Ok(NewOrder {
                    pricing,
                    side,
                    instrument,
                    quantity,
                })
            }
            _ => Err(errors),
        }
    }

    pub fn order_type(&self) -> OrderType {
        self.pricing.order_type()
    }

    pub fn limit_price(&self) -> Option<Price> {
        self.pricing.limit_price()
    }

    /// A canonical text of the order's content: two bodies that mean the same order (key order,
    /// `1.5` vs `1.50`) have the same fingerprint. Used to tell an idempotent retry from a
    /// different request reusing the key.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.order_type().as_str(),
            self.side.as_str(),
            self.instrument,
            self.quantity.get(),
            self.limit_price()
                .map(|p| p.to_string())
                .unwrap_or_default()
        )
    }
}

/// The retry schedule of placements: exponential backoff with "full jitter".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay ceiling after the first failed attempt.
    pub base: Duration,
    /// Largest delay ever.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The ceiling of the delay after `attempts` failed attempts (1 after the first):
    /// `base * 2^(attempts-1)`, at most `cap`.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay before the next attempt. `jitter` in `[0, 1]` (a uniform random number) picks a
    /// point between half the ceiling and the ceiling, so that retries of many orders that failed
    /// together spread out instead of hitting the exchange in lockstep, while no retry comes
    /// sooner than half the schedule.
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempts);
        ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::json;
    use std::str::FromStr;

    fn fields(body: Value) -> Vec<String> {
        NewOrder::from_json(&body)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    fn message(body: Value, field: &str) -> String {
        NewOrder::from_json(&body)
            .unwrap_err()
            .0
            .into_iter()
            .find(|e| e.field == field)
            .map(|e| e.message)
            .unwrap_or_else(|| panic!("no error for {field}"))
    }

    fn limit() -> Value {
        json!({"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 150.25})
    }

    fn market() -> Value {
        json!({"type": "market", "side": "sell", "instrument": "EGS60121C018", "quantity": 1})
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        body[key] = value;
        body
    }

    fn without(mut body: Value, key: &str) -> Value {
        body.as_object_mut().unwrap().remove(key);
        body
    }

    #[test]
    fn a_valid_limit_order_parses() {
        let o = NewOrder::from_json(&limit()).unwrap();
        assert_eq!(o.order_type(), OrderType::Limit);
        assert_eq!(o.side, Side::Buy);
        assert_eq!(o.instrument.as_str(), "US0378331005");
        assert_eq!(o.quantity.get(), 10);
        assert_eq!(o.limit_price(), Decimal::from_str("150.25").ok());
    }

    #[test]
    fn a_valid_market_order_parses() {
        let o = NewOrder::from_json(&market()).unwrap();
        assert_eq!(o.pricing, Pricing::Market);
        assert_eq!(o.side, Side::Sell);
        assert_eq!(o.limit_price(), None);
        // null counts as absent
        assert!(NewOrder::from_json(&with(market(), "limit_price", Value::Null)).is_ok());
    }

    #[test]
    fn type_must_be_market_or_limit() {
        assert_eq!(fields(without(market(), "type")), ["type"]);
        assert_eq!(fields(with(market(), "type", json!("stop"))), ["type"]);
        assert_eq!(fields(with(market(), "type", json!("MARKET"))), ["type"]);
        assert_eq!(fields(with(market(), "type", json!(1))), ["type"]);
        assert_eq!(message(without(market(), "type"), "type"), "is required");
    }

    #[test]
    fn side_must_be_buy_or_sell() {
        assert_eq!(fields(without(limit(), "side")), ["side"]);
        assert_eq!(fields(with(limit(), "side", json!("hold"))), ["side"]);
        assert_eq!(fields(with(limit(), "side", json!("BUY"))), ["side"]);
        assert_eq!(fields(with(limit(), "side", json!(true))), ["side"]);
    }

    #[test]
    fn instrument_must_have_exactly_12_characters() {
        assert_eq!(fields(without(limit(), "instrument")), ["instrument"]);
        assert_eq!(
            fields(with(limit(), "instrument", json!("US037833100"))),
            ["instrument"]
        );
        assert_eq!(
            fields(with(limit(), "instrument", json!("US03783310055"))),
            ["instrument"]
        );
        assert_eq!(
            fields(with(limit(), "instrument", json!(""))),
            ["instrument"]
        );
        assert_eq!(
            fields(with(limit(), "instrument", json!(123456789012_i64))),
            ["instrument"]
        );
        // Characters, not bytes.
        assert!(NewOrder::from_json(&with(limit(), "instrument", json!("ÄÖÜ123456789"))).is_ok());
    }

    #[test]
    fn quantity_must_be_a_positive_integer() {
        assert_eq!(fields(without(limit(), "quantity")), ["quantity"]);
        assert_eq!(fields(with(limit(), "quantity", json!(0))), ["quantity"]);
        assert_eq!(fields(with(limit(), "quantity", json!(-5))), ["quantity"]);
        assert_eq!(fields(with(limit(), "quantity", json!(1.5))), ["quantity"]);
        assert_eq!(fields(with(limit(), "quantity", json!("10"))), ["quantity"]);
        assert_eq!(
            fields(with(limit(), "quantity", json!(u64::MAX))),
            ["quantity"]
        );
        assert_eq!(
            message(with(limit(), "quantity", json!(0)), "quantity"),
            "must be greater than 0"
        );
        assert!(NewOrder::from_json(&with(limit(), "quantity", json!(1))).is_ok());
    }

    #[test]
    fn limit_price_must_be_positive_with_at_most_two_decimals() {
        assert_eq!(
            fields(with(limit(), "limit_price", json!(0))),
            ["limit_price"]
        );
        assert_eq!(
            fields(with(limit(), "limit_price", json!(-1.5))),
            ["limit_price"]
        );
        assert_eq!(
            fields(with(limit(), "limit_price", json!(1.005))),
            ["limit_price"]
        );
        assert_eq!(
            fields(with(limit(), "limit_price", json!("1.5"))),
            ["limit_price"]
        );
        assert_eq!(
            message(with(limit(), "limit_price", json!(1.005)), "limit_price"),
            "must have at most 2 decimals"
        );
        for ok in [
            json!(1),
            json!(0.01),
            json!(1.5),
            json!(99999.99),
            json!(1e3),
        ] {
            assert!(
                NewOrder::from_json(&with(limit(), "limit_price", ok.clone())).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn limit_price_is_required_for_limit_orders() {
        assert_eq!(fields(without(limit(), "limit_price")), ["limit_price"]);
        assert_eq!(
            message(without(limit(), "limit_price"), "limit_price"),
            "is required for a limit order"
        );
    }

    #[test]
    fn limit_price_is_forbidden_for_market_orders() {
        assert_eq!(
            fields(with(market(), "limit_price", json!(10))),
            ["limit_price"]
        );
        assert_eq!(
            message(with(market(), "limit_price", json!(10)), "limit_price"),
            "must not be given for a market order"
        );
        // A malformed price on a market order is reported once.
        assert_eq!(
            fields(with(market(), "limit_price", json!("x"))),
            ["limit_price"]
        );
    }

    #[test]
    fn every_bad_field_is_reported() {
        let f = fields(
            json!({"type": "stop", "side": "hold", "instrument": "X", "quantity": 0, "limit_price": -1}),
        );
        assert_eq!(f, ["type", "side", "instrument", "quantity", "limit_price"]);
        assert_eq!(
            fields(json!({})),
            ["type", "side", "instrument", "quantity"]
        );
        assert_eq!(fields(json!([1, 2])), ["body"]);
        assert_eq!(fields(json!(null)), ["body"]);
    }

    #[test]
    fn fingerprints_ignore_formatting() {
        let a = NewOrder::from_json(&with(limit(), "limit_price", json!(1.5))).unwrap();
        let b: Value = serde_json::from_str(
            r#"{"limit_price": 1.50, "quantity": 10, "instrument": "US0378331005", "side": "buy", "type": "limit"}"#,
        )
        .unwrap();
        let b = NewOrder::from_json(&b).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), "limit|buy|US0378331005|10|1.5");
        let c = NewOrder::from_json(&with(limit(), "quantity", json!(11))).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn stored_parts_round_trip() {
        let p = LimitPrice::new(Decimal::from_str("2.50").unwrap()).unwrap();
        assert_eq!(p.get().to_string(), "2.5");
        assert_eq!(
            Pricing::from_parts(OrderType::Limit, Some(p.get())),
            Ok(Pricing::Limit(p))
        );
        assert_eq!(
            Pricing::from_parts(OrderType::Market, None),
            Ok(Pricing::Market)
        );
        assert!(Pricing::from_parts(OrderType::Market, Some(p.get())).is_err());
        assert!(Pricing::from_parts(OrderType::Limit, None).is_err());
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("done"), None);
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(20), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn backoff_jitter_stays_between_half_and_full_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), b.ceiling(3) / 2);
        assert_eq!(b.delay(3, 1.0), b.ceiling(3));
        assert_eq!(
            b.delay(3, 7.0),
            b.ceiling(3),
            "out-of-range jitter is clamped"
        );
        let mid = b.delay(3, 0.5);
        assert!(mid > b.ceiling(3) / 2 && mid < b.ceiling(3));
    }
}
