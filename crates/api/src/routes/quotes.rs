//! Quotes: log in for a JWT, ask for a quote, read your history, see the top stocks.
//! The quote itself comes from the quote service through [`bourse_quotes::QuoteClient`].

use crate::auth::{check_password, AdminUser, AuthUser, ClientIp};
use crate::extract::{JsonBody, QueryParams};
use crate::login::Scheme;
use crate::page::{check_limit, link_next};
use crate::routes::Ohlc;
use crate::{ApiContext, ApiError};
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bourse_domain::money::as_number;
use bourse_quotes::QuoteError;
use bourse_store::quotes::{HistoryEntry, QuoteRecord};
use chrono::{SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/login", post(login))
        .route("/stock", get(stock))
        .route("/history", get(history))
        .route("/users/history", get(history))
        .route("/stats", get(stats))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub(crate) token: String,
}

/// Exchanges a username and password for a JWT valid for 60 minutes.
#[utoipa::path(post, path = "/login", tag = "quotes", request_body = LoginBody,
    responses((status = 200, body = TokenView), (status = 400), (status = 401),
        (status = 429, description = "too many attempts for this account or address"),
        (status = 503, description = "every password-hashing slot is busy")))]
pub async fn login(
    State(ctx): State<ApiContext>,
    ClientIp(addr): ClientIp,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<TokenView>, ApiError> {
    let user = check_password(&ctx, Scheme::Login, addr, &body.username, &body.password).await?;
    let token = ctx.jwt.issue(user.id, &user.username, user.token_version)?;
    Ok(Json(TokenView { token }))
}

/// A quote-service failure as the API answers it: the status docs/api.md maps each code to, and the
/// service's message (which never carries internals).
impl From<QuoteError> for ApiError {
    fn from(e: QuoteError) -> Self {
        ApiError::Upstream {
            status: StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
            code: e.code(),
            message: e.message().to_string(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StockQuery {
    /// Stock code, e.g. `aapl.us`: up to 32 ASCII letters, digits and `. ^ - _ =`, one of them a
    /// letter or digit (the quote service's rule; the pattern bounds a leading run of symbols at
    /// 16).
    #[param(
        required = true,
        pattern = "^\\s*(?:[A-Za-z0-9][A-Za-z0-9.^_=-]{0,31}|[.^_=-]{1,16}[A-Za-z0-9][A-Za-z0-9.^_=-]{0,14})\\s*$"
    )]
    q: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QuoteView {
    symbol: String,
    company_name: String,
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    quote: Decimal,
}

/// The latest quote of a stock (its close), recorded in the caller's history.
#[utoipa::path(get, path = "/stock", tag = "quotes", params(StockQuery),
    responses((status = 200, body = QuoteView),
              (status = 400, description = "`q` missing, blank or with a control character"),
              (status = 401), (status = 404),
              (status = 502), (status = 503), (status = 504)),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn stock(
    State(ctx): State<ApiContext>,
    AuthUser(user): AuthUser,
    QueryParams(q): QueryParams<StockQuery>,
) -> Result<Json<QuoteView>, ApiError> {
    let code =
        q.q.map(|c| c.trim().to_lowercase())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest("query parameter `q` (stock code) is required".into())
            })?;
    if code.chars().any(char::is_control) {
        // Kept in the history, whose PostgreSQL text refuses NUL; no stock code has one.
        return Err(ApiError::BadRequest(
            "`q` must not contain control characters".into(),
        ));
    }
    let quote = ctx.quotes.quote(&code).await?;
    ctx.history
        .submit((
            user.id,
            QuoteRecord {
                code,
                symbol: quote.symbol.clone(),
                name: quote.name.clone(),
                open: quote.open,
                high: quote.high,
                low: quote.low,
                close: quote.close,
                requested_at: Utc::now(),
            },
        ))
        .await?;
    Ok(Json(QuoteView {
        symbol: quote.symbol,
        company_name: quote.name,
        quote: quote.close,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many entries (default 50, at most 500; above: 400).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Cursor from the previous page's `Link: rel="next"` header.
    before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryView {
    date: String,
    name: String,
    symbol: String,
    #[serde(flatten)]
    prices: Ohlc,
}

impl From<&HistoryEntry> for HistoryView {
    fn from(h: &HistoryEntry) -> Self {
        let r = &h.record;
        HistoryView {
            date: r.requested_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            name: r.name.clone(),
            symbol: r.symbol.clone(),
            prices: Ohlc {
                open: r.open,
                high: r.high,
                low: r.low,
                close: r.close,
            },
        }
    }
}

/// The caller's quote requests, newest first; paginated with `limit` and the `before` cursor
/// given in the `Link` header.
#[utoipa::path(get, path = "/history", tag = "quotes", params(HistoryQuery),
    responses((status = 200, body = [HistoryView],
            headers(("Link" = String, description = "`<…>; rel=\"next\"` when entries remain"))),
        (status = 400, description = "unknown parameter, bad value, a `limit` over the maximum"),
        (status = 401)),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn history(
    State(ctx): State<ApiContext>,
    OriginalUri(uri): OriginalUri,
    AuthUser(user): AuthUser,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = check_limit(q.limit, 50, 500)?;
    let mut entries = ctx
        .store
        .quote_history(user.id, q.before, limit + 1)
        .await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let body: Vec<HistoryView> = entries.iter().map(HistoryView::from).collect();
    let mut response = Json(body).into_response();
    if let Some(last) = entries.last().filter(|_| more) {
        let query = [
            ("limit", limit.to_string()),
            ("before", last.id.to_string()),
        ];
        link_next(&mut response, uri.path(), &query);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub struct StatView {
    stock: String,
    times_requested: i64,
}

/// The five most requested stocks over all users (admins only).
#[utoipa::path(get, path = "/stats", tag = "quotes",
    responses((status = 200, body = [StatView]), (status = 401), (status = 403)),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn stats(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
) -> Result<Json<Vec<StatView>>, ApiError> {
    let top = ctx.store.top_requested(5).await?;
    Ok(Json(
        top.into_iter()
            .map(|(stock, times_requested)| StatView {
                stock,
                times_requested,
            })
            .collect(),
    ))
}
