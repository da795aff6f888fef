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
use bourse_domain::tick::parse_timestamp;
use chrono::{DateTime, NaiveDate, Utc};

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

/// A time bound of a range query (`from`/`to`, `start`/`end`): a date means its first instant,
/// or its last when `end_of_day`; a timestamp is taken as given.
pub(crate) fn time_bound(
    field: &str,
    raw: Option<&str>,
    end_of_day: bool,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let t = if end_of_day {
            date.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            date.and_hms_opt(0, 0, 0)
        };
        return Ok(t.map(|t| t.and_utc()));
    }
    parse_timestamp(raw).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid `{field}`: expected YYYY-MM-DD or an RFC 3339 timestamp"
        ))
    })
}
