//! The OpenAPI document, generated from the handlers' annotations, and the docs UI (Swagger UI
//! bundled into the binary at build time, so `/docs` works with no internet at build or run time).

use crate::routes::{ops, orders, quotes, register, series, stocks, symbol};
use crate::ApiContext;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "bourse", description = "Stock-market backend: live feed, quotes, orders, time series, API keys."),
    paths(
        stocks::list, stocks::detail, stocks::ticks, stocks::stream, stocks::set_analysis,
        quotes::login, quotes::stock, quotes::history, quotes::stats,
        orders::create, orders::list, orders::detail, orders::events,
        series::time_series, series::indicator,
        register::register, symbol::symbol,
        ops::healthcheck, ops::readyz, ops::metrics,
    ),
    components(schemas(
        stocks::StockView, stocks::StockDetailView, stocks::AnalysisView, stocks::TickView,
        quotes::LoginBody, quotes::TokenView, quotes::QuoteView, quotes::HistoryView, quotes::StatView,
        orders::OrderBody, orders::CreatedOrderView, orders::OrderView, orders::OrderEventView,
        series::TimeSeriesRow, series::IndicatorRow,
        register::RegisterBody, symbol::SymbolView,
    )),
    modifiers(&Security),
    tags(
        (name = "stocks", description = "Live prices and analyst targets"),
        (name = "admin", description = "Admin-only routes"),
        (name = "quotes", description = "Quotes from public providers, history and stats"),
        (name = "orders", description = "Orders: durable acceptance, placement at the exchange, history"),
        (name = "time series", description = "OHLCV bars, resampling and technical indicators"),
        (name = "keys", description = "Self-service API keys and daily summaries; per-day quotas apply to every route but operations"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <key>`, the key from POST /register or `bourse user token`",
            ))),
        );
    }
}

pub fn docs() -> Router<ApiContext> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
