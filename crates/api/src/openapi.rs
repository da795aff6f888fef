//! The OpenAPI document, generated from the handlers' annotations, and the docs UI (Swagger UI
//! bundled into the binary at build time, so `/docs` works with no internet at build or run time).

use crate::page::Paging;
use crate::routes::{ops, orders, quotes, register, series, stocks, symbol};
use crate::ApiContext;
use axum::Router;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
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
        ErrorView, crate::routes::TimeBound, stocks::AnalysisBody, orders::OrderFields,
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

/// The body of every error answer (see [`crate::ApiError`]).
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ErrorView {
    message: String,
    /// 401 and 429: the same text, as Django REST framework clients read it.
    detail: Option<String>,
    /// 404 of a stock id (seed 000's clients read it).
    error: Option<String>,
    /// A quote provider's error code (502, 503, 504).
    code: Option<String>,
    /// 422: one entry per invalid field.
    #[schema(value_type = Option<Vec<Object>>)]
    errors: Option<Vec<serde_json::Value>>,
}

/// The document as served: the annotations' one, with what they cannot say themselves: the
/// configured page maximum, the 429 of the quotas (every route but operations), the 413 of the
/// body limit, the 408 of the request deadline and the 503 of the connection bound (every route),
/// the error body on every 4xx/5xx, and the names a multipart part can have.
pub fn document(paging: Paging) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let paged = PAGED_BY_SETTING.contains(&path.as_str());
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                // A timed-out order is a 503 of its own (documented on the route), not a 408.
                let placing = method == "post" && path == "/orders";
                complete_operation(op, paged.then_some(paging), !placing);
            }
        }
    }
    doc
}

/// The routes whose `limit` maximum is `BOURSE_PAGE_MAX`.
const PAGED_BY_SETTING: [&str; 2] = ["/stocks", "/stocks/time-series/{symbol}"];

fn complete_operation(op: &mut Value, paging: Option<Paging>, deadline_408: bool) {
    let operations = op["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "operations"));
    let params = op.get_mut("parameters").and_then(Value::as_array_mut);
    if let (Some(paging), Some(params)) = (paging, params) {
        for p in params.iter_mut().filter(|p| p["name"] == "limit") {
            p["schema"]["maximum"] = json!(paging.max);
            p["description"] = json!(format!(
                "Rows per page (default {}, at most {}; above: 400).",
                paging.default, paging.max
            ));
        }
    }
    // A multipart part's name travels in a header: no control character or quote can be sent.
    if let Some(multipart) = op
        .pointer_mut("/requestBody/content/multipart~1form-data")
        .and_then(Value::as_object_mut)
    {
        if let Some(schema) = multipart.remove("schema") {
            multipart.insert(
                "schema".into(),
                json!({"allOf": [schema],
                       "propertyNames": {"pattern": "^[^\\x00-\\x1f\\x7f\"]*$"}}),
            );
        }
    }
    let has_body = op.get("requestBody").is_some();
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    if !operations {
        responses.entry("429").or_insert_with(|| {
            json!({"description": "a quota is used up; `Retry-After` says when to retry",
                   "headers": {"Retry-After": {"schema": {"type": "integer"}}}})
        });
    }
    if deadline_408 {
        responses.entry("408").or_insert_with(|| {
            json!({"description": "still running at the request deadline (`BOURSE_REQUEST_TIMEOUT_SECS`)"})
        });
    }
    responses.entry("503").or_insert_with(|| {
        json!({"description": "the process holds `BOURSE_HTTP_MAX_CONNECTIONS` connections; \
                               `Retry-After` says when to retry",
               "headers": {"Retry-After": {"schema": {"type": "integer"}}}})
    });
    if has_body {
        responses
            .entry("413")
            .or_insert_with(|| json!({"description": "the body is over 64 KiB"}));
    }
    for (status, response) in responses.iter_mut() {
        if status.as_str() >= "400" && response.get("content").is_none() {
            response["content"] = json!({"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorView"}}});
        }
    }
}

pub fn docs(paging: Paging) -> Router<ApiContext> {
    // Served as JSON: utoipa's types have no `propertyNames`.
    Router::new()
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document(paging)))
}
