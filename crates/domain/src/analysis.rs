//! Analyst targets and the rule that flips `target_hit`.
//!
//! The rule is the feed API's: an `UP` target is hit when the price reaches or passes it from below,
//! a `DOWN` target when the price reaches or passes it from above. Once hit, it stays hit until a
//! new analysis replaces it, so a price that crosses back does not erase the event.

use crate::money::{check_price, decimal_from_json_number, Price};

/// Decimal places an analyst target may have.
pub const TARGET_DECIMALS: u32 = 8;
use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetType {
    Up,
    Down,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Up => "UP",
            TargetType::Down => "DOWN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "UP" => Some(TargetType::Up),
            "DOWN" => Some(TargetType::Down),
            _ => None,
        }
    }

    /// The feed API's rule, equality included.
    pub fn reached(self, target: Price, price: Price) -> bool {
        match self {
            TargetType::Up => price >= target,
            TargetType::Down => price <= target,
        }
    }
}

/// A validated analysis as an admin posts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAnalysis {
    pub target: Price,
    pub kind: TargetType,
}

impl NewAnalysis {
    /// Validates a JSON body: `target` a number > 0, `type` `"UP"` or `"DOWN"`. Every bad field
    /// is reported.
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = body.as_object() else {
            errors.push("body", "must be a JSON object");
            return Err(errors);
        };
        let target = match obj.get("target") {
            None | Some(Value::Null) => {
                errors.push("target", "is required");
                None
            }
            Some(Value::Number(n)) => match decimal_from_json_number(n) {
                Some(t) => match check_price(t, TARGET_DECIMALS) {
                    Ok(t) => Some(t),
                    Err(m) => {
                        errors.push("target", m);
                        None
                    }
                },
                None => {
                    errors.push("target", "must be a decimal number");
                    None
                }
            },
            Some(_) => {
                errors.push("target", "must be a number");
                None
            }
        };
        let kind = match obj.get("type") {
            None | Some(Value::Null) => {
                errors.push("type", "is required");
                None
            }
            Some(Value::String(s)) => {
                let k = TargetType::parse(s);
                if k.is_none() {
                    errors.push("type", "must be \"UP\" or \"DOWN\"");
                }
                k
            }
            Some(_) => {
                errors.push("type", "must be \"UP\" or \"DOWN\"");
                None
            }
        };
        match (target, kind) {
            (Some(target), Some(kind)) if errors.is_empty() => Ok(NewAnalysis { target, kind }),
            _ => Err(errors),
        }
    }

    /// The analysis as it stands right after posting, judged at once against the current price.
    pub fn evaluate(self, current_price: Option<Price>) -> Analysis {
        Analysis {
            target: self.target,
            kind: self.kind,
            target_hit: current_price.is_some_and(|p| self.kind.reached(self.target, p)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    pub target: Price,
    pub kind: TargetType,
    pub target_hit: bool,
}

impl Analysis {
    /// Whether `price` newly hits this target: false when it was already hit (the flip happens
    /// once) or when the price does not reach it.
    pub fn newly_hit_by(&self, price: Price) -> bool {
        !self.target_hit && self.kind.reached(self.target, price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::json;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    #[test]
    fn up_is_hit_at_or_above_target() {
        assert!(TargetType::Up.reached(d(29), d(29)));
        assert!(TargetType::Up.reached(d(29), d(30)));
        assert!(!TargetType::Up.reached(d(29), d(28)));
    }

    #[test]
    fn down_is_hit_at_or_below_target() {
        assert!(TargetType::Down.reached(d(29), d(29)));
        assert!(TargetType::Down.reached(d(29), d(10)));
        assert!(!TargetType::Down.reached(d(29), d(30)));
    }

    #[test]
    fn posting_evaluates_against_the_current_price() {
        let a = NewAnalysis {
            target: d(29),
            kind: TargetType::Up,
        };
        assert!(a.evaluate(Some(d(30))).target_hit);
        assert!(!a.evaluate(Some(d(28))).target_hit);
        assert!(!a.evaluate(None).target_hit);
    }

    #[test]
    fn a_hit_target_is_not_hit_again() {
        let mut a = NewAnalysis {
            target: d(29),
            kind: TargetType::Up,
        }
        .evaluate(Some(d(1)));
        assert!(a.newly_hit_by(d(29)));
        a.target_hit = true;
        assert!(!a.newly_hit_by(d(40)));
    }

    #[test]
    fn validation_reports_every_bad_field() {
        let err = NewAnalysis::from_json(&json!({"target": -1, "type": "SIDEWAYS"})).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["target", "type"]);
        let err = NewAnalysis::from_json(&json!({})).unwrap_err();
        assert_eq!(err.0.len(), 2);
        let err = NewAnalysis::from_json(&json!({"target": "29", "type": "up"})).unwrap_err();
        assert_eq!(
            err.0.len(),
            2,
            "strings and lower case are not accepted: {err}"
        );
        assert!(NewAnalysis::from_json(&json!([1])).is_err());
        assert!(NewAnalysis::from_json(&json!({"target": 0, "type": "UP"})).is_err());
    }

    #[test]
    fn validation_accepts_decimals() {
        let a = NewAnalysis::from_json(&json!({"target": 29.5, "type": "DOWN"})).unwrap();
        assert_eq!(a.target.to_string(), "29.5");
        assert_eq!(a.kind, TargetType::Down);
    }
}
