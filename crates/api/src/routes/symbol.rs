//! Daily summaries: `GET /symbol/{symbol}` from the quote service's AlphaVantage
//! provider. Prices are the upstream strings; the variation is an exact decimal.

use crate::auth::AuthUser;
use crate::extract::PathParams;
use crate::{ApiContext, ApiError};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use bourse_domain::money::as_number;
use bourse_quotes::DailySummary;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

pub fn router() -> Router<ApiContext> {
    // DRF-style clients ask for `/api/v1/symbol/ibm/`, with the trailing slash.
    Router::new()
        .route("/symbol/{symbol}", get(symbol))
        .route("/symbol/{symbol}/", get(symbol))
}

/// The DRF-style API's answer, keys in its order.
#[derive(Serialize, ToSchema)]
pub struct SymbolView {
    #[schema(example = "2022-07-29")]
    last_refreshed: String,
    #[schema(example = "130.7900")]
    close_value: String,
    #[schema(example = "129.5200")]
    open_value: String,
    #[schema(example = "131.0000")]
    high_value: String,
    #[schema(example = "129.3100")]
    low_value: String,
    /// Last close minus the previous trading day's close, exact.
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64, example = 1.57)]
    variation_between_last_two_days: Decimal,
}

impl From<DailySummary> for SymbolView {
    fn from(s: DailySummary) -> Self {
        SymbolView {
            last_refreshed: s.last_refreshed,
            close_value: s.close_value,
            open_value: s.open_value,
            high_value: s.high_value,
            low_value: s.low_value,
            variation_between_last_two_days: s.variation_between_last_two_days,
        }
    }
}

/// The last trading day of a symbol (e.g. `ibm`) and its variation from the day before.
/// AlphaVantage's "Error Message" is a 404, its "Note"/"Information" (its own quota) a 503,
/// both with the upstream text as `message`.
#[utoipa::path(get, path = "/symbol/{symbol}", tag = "keys",
    params(("symbol" = String, Path, description = "e.g. `ibm`: as `q` of `GET /stock`",
        pattern = "^\\s*(?:[A-Za-z0-9][A-Za-z0-9.^_=-]{0,31}|[.^_=-]{1,16}[A-Za-z0-9][A-Za-z0-9.^_=-]{0,14})\\s*$")),
    responses((status = 200, body = SymbolView), (status = 400), (status = 401), (status = 404),
              (status = 429), (status = 502), (status = 503), (status = 504)),
    security(("token" = []), ("basic" = []), ("bearer" = [])))]
pub async fn symbol(
    State(ctx): State<ApiContext>,
    _user: AuthUser,
    PathParams(symbol): PathParams<String>,
) -> Result<Json<SymbolView>, ApiError> {
    Ok(Json(ctx.quotes.daily(&symbol).await?.into()))
}
