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

/// Routes served both at their SPEC path and under `/api/v1`.
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
