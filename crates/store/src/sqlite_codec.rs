//! Encoding of exact values for SQLite, which has no decimal or timestamp type.

use crate::StoreError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::str::FromStr;
use uuid::Uuid;

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("instant {us} out of range")))
}

pub(crate) fn decimal(text: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(text).map_err(|_| StoreError::Corrupt(format!("decimal {text:?}")))
}

pub(crate) fn uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("uuid {text:?}")))
}
