//! One module per resource.

pub mod ops;
pub mod orders;
pub mod quotes;
pub mod register;
pub mod series;
pub mod stocks;
pub mod symbol;

use crate::{ApiContext, ApiError};
use axum::Router;
use bourse_domain::money::as_number;
use bourse_domain::tick::parse_timestamp;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

/// Routes served both at their documented path and under `/api/v1`.
pub fn router() -> Router<ApiContext> {
    Router::new()
        .merge(stocks::router())
        .merge(quotes::router())
        .merge(series::router())
        .merge(orders::router())
        .merge(register::router())
        .merge(symbol::router())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A time bound of a range query (`from`/`to`, `start`/`end`, a cursor): a date means its first
/// instant, or its last when `end_of_day`; a timestamp is taken as given. A year outside 0000 to
/// 9999 as written (RFC 3339's range) is a 400: PostgreSQL's `timestamptz` refuses some of those
/// (a 500 otherwise), and no stored row lies there.
pub(crate) fn time_bound(
    field: &str,
    raw: Option<&str>,
    end_of_day: bool,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let parsed = match NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        Ok(date) if end_of_day => date.and_hms_micro_opt(23, 59, 59, 999_999).map(|t| (t, t)),
        Ok(date) => date.and_hms_opt(0, 0, 0).map(|t| (t, t)),
        Err(_) => match DateTime::parse_from_rfc3339(raw.trim()) {
            Ok(t) => Some((t.naive_local(), t.naive_utc())),
            Err(_) => parse_timestamp(raw).map(|t| (t.naive_utc(), t.naive_utc())),
        },
    };
    let (written, utc) = parsed.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid `{field}`: expected YYYY-MM-DD or an RFC 3339 timestamp"
        ))
    })?;
    if !(0..=9999).contains(&written.year()) {
        return Err(ApiError::BadRequest(format!(
            "`{field}` must lie between years 0000 and 9999"
        )));
    }
    Ok(Some(utc.and_utc()))
}

/// The documented type of a time bound: a date or an RFC 3339 timestamp, years 0000 to 9999.
pub struct TimeBound;

impl utoipa::PartialSchema for TimeBound {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        let string = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        OneOfBuilder::new()
            .item(string(KnownFormat::Date))
            .item(string(KnownFormat::DateTime))
            .description(Some(
                "`YYYY-MM-DD` or an RFC 3339 timestamp; years 0000 to 9999",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TimeBound {}

/// Open, high, low and close of a bar or a quote: exact decimals, rendered as JSON numbers.
#[derive(Serialize, ToSchema)]
pub struct Ohlc {
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64, example = 95.455002)]
    pub open: Decimal,
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    pub high: Decimal,
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    pub low: Decimal,
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    pub close: Decimal,
}
