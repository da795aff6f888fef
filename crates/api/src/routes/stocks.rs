//! Live stocks: latest prices, analyst targets, tick history, and the live stream.

use crate::auth::AdminUser;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::page::{check_limit, link_next};
use crate::routes::TimeBound;
use crate::{ApiContext, ApiError};
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bourse_domain::money::as_number;
use bourse_domain::{Analysis, NewAnalysis, TargetType};
use bourse_feed::FeedEvent;
use bourse_store::feed::{StockDetail, StockRow};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/stocks", get(list))
        .route("/stocks/stream", get(stream))
        .route("/stocks/{stock_id}", get(detail))
        .route("/stocks/{stock_id}/ticks", get(ticks))
        .route("/admin/stocks/{stock_id}/analysis", post(set_analysis))
}

#[derive(Serialize, ToSchema)]
pub struct StockView {
    stock_id: Uuid,
    name: String,
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    price: Decimal,
    availability: i64,
}

impl From<&StockRow> for StockView {
    fn from(s: &StockRow) -> Self {
        StockView {
            stock_id: s.stock_id,
            name: s.name.clone(),
            price: s.price,
            availability: s.availability,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AnalysisView {
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    target: Decimal,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "UP")]
    kind: TargetType,
    target_hit: bool,
}

impl From<Analysis> for AnalysisView {
    fn from(a: Analysis) -> Self {
        AnalysisView {
            target: a.target,
            kind: a.kind,
            target_hit: a.target_hit,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StockDetailView {
    #[serde(flatten)]
    stock: StockView,
    technical_analysis: Option<AnalysisView>,
}

impl From<&StockDetail> for StockDetailView {
    fn from(d: &StockDetail) -> Self {
        StockDetailView {
            stock: (&d.stock).into(),
            technical_analysis: d.analysis.map(Into::into),
        }
    }
}

fn stock_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest("stock_id must be a UUID".into()))
}

/// The query of `GET /stocks`. Unknown parameters are refused (400).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `technical_analysis`: each row also carries its analyst target (as `GET /stocks/{id}`
    /// does), so that one request shows every stock's target (the dashboard's snapshot).
    #[param(value_type = Option<String>, pattern = "^technical_analysis$", example = "technical_analysis")]
    include: Option<Include>,
    /// Rows per page (default `BOURSE_PAGE_DEFAULT`, at most `BOURSE_PAGE_MAX`; above: 400).
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Cursor: the stocks after this one (the last `stock_id` of the previous page); the
    /// `Link: rel="next"` header carries it.
    after: Option<Uuid>,
}

/// One page of `rows` (ordered by name, then id): those after the stock `after`, at most
/// `limit`, and the cursor of the next page. The list is small (one row per stock) and cached
/// whole, so the page is cut from it.
fn page_of<T>(
    rows: &[T],
    id: impl Fn(&T) -> Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> Result<(&[T], Option<Uuid>), ApiError> {
    let from = match after {
        None => 0,
        Some(a) => {
            rows.iter()
                .position(|r| id(r) == a)
                .ok_or(ApiError::StockNotFound)?
                + 1
        }
    };
    let rest = &rows[from..];
    let page = &rest[..rest.len().min(limit as usize)];
    let next = (rest.len() > page.len())
        .then(|| page.last().map(&id))
        .flatten();
    Ok((page, next))
}

fn paged<V: Serialize>(
    views: Vec<V>,
    next: Option<Uuid>,
    path: &str,
    q: &ListQuery,
    limit: u32,
) -> Response {
    let mut response = Json(views).into_response();
    if let Some(next) = next {
        let mut query = Vec::new();
        if q.include.is_some() {
            query.push(("include", "technical_analysis".to_string()));
        }
        query.push(("limit", limit.to_string()));
        query.push(("after", next.to_string()));
        link_next(&mut response, path, &query);
    }
    response
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Include {
    TechnicalAnalysis,
}

/// All stocks with their latest price and availability, ordered by name, a page at a time:
/// when stocks remain, `Link: <…&after=…>; rel="next"` names the next page.
#[utoipa::path(get, path = "/stocks", tag = "stocks", operation_id = "list_stocks", params(ListQuery),
    responses(
        (status = 200, body = [StockView],
            description = "with `include=technical_analysis`, rows are `StockDetailView`s",
            headers(("Link" = String, description = "`<…>; rel=\"next\"` when stocks remain"))),
        (status = 400, description = "unknown parameter, bad value, a `limit` over the maximum"),
        (status = 404, description = "`after` names no stock")))]
pub async fn list(
    State(ctx): State<ApiContext>,
    OriginalUri(uri): OriginalUri,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = ctx.paging.limit(q.limit)?;
    if let Some(Include::TechnicalAnalysis) = q.include {
        let rows = match ctx.stocks.detailed_list() {
            Some(rows) => rows,
            None => ctx
                .stocks
                .put_detailed_list(ctx.store.list_stocks_with_analysis().await?),
        };
        let (page, next) = page_of(&rows, |r| r.stock.stock_id, q.after, limit)?;
        let views: Vec<StockDetailView> = page.iter().map(StockDetailView::from).collect();
        return Ok(paged(views, next, uri.path(), &q, limit));
    }
    let rows = match ctx.stocks.list() {
        Some(rows) => rows,
        None => ctx.stocks.put_list(ctx.store.list_stocks().await?),
    };
    let (page, next) = page_of(&rows, |r| r.stock_id, q.after, limit)?;
    let views: Vec<StockView> = page.iter().map(StockView::from).collect();
    Ok(paged(views, next, uri.path(), &q, limit))
}

/// One stock with its analyst target, if any.
#[utoipa::path(get, path = "/stocks/{stock_id}", tag = "stocks", operation_id = "get_stock",
    params(("stock_id" = Uuid, Path, description = "the stock's id")),
    responses((status = 200, body = StockDetailView), (status = 400, description = "not a UUID"),
        (status = 404)))]
pub async fn detail(
    State(ctx): State<ApiContext>,
    PathParams(raw): PathParams<String>,
) -> Result<Json<StockDetailView>, ApiError> {
    let id = stock_id(&raw)?;
    let cached = ctx
        .stocks
        .detail(id, async { Ok(ctx.store.get_stock(id).await?) })
        .await?;
    match cached.as_ref() {
        Some(d) => Ok(Json(d.into())),
        None => Err(ApiError::StockNotFound),
    }
}

/// The body of `POST /admin/stocks/{stock_id}/analysis` (documentation; validation is
/// [`NewAnalysis::from_json`], which enforces exactly these constraints).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"target": 29, "type": "UP"}))]
#[allow(dead_code)]
pub struct AnalysisBody {
    /// The price to watch for: > 0, at most 1000000000, at most 8 decimals.
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1000000000, multiple_of = 0.00000001)]
    target: f64,
    /// `UP`: hit when the price reaches the target from below; `DOWN`: from above.
    #[serde(rename = "type")]
    #[schema(inline)]
    kind: TargetKind,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
enum TargetKind {
    Up,
    Down,
}

/// Sets (replaces) a stock's analyst target; judged at once against the current price.
#[utoipa::path(post, path = "/admin/stocks/{stock_id}/analysis", tag = "admin",
    params(("stock_id" = Uuid, Path)),
    request_body = AnalysisBody,
    responses((status = 201, body = AnalysisView), (status = 400, description = "not a UUID, not JSON"),
        (status = 401), (status = 403), (status = 404), (status = 422, description = "a field is invalid")),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn set_analysis(
    State(ctx): State<ApiContext>,
    _admin: AdminUser,
    PathParams(raw): PathParams<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<impl IntoResponse, ApiError> {
    let id = stock_id(&raw)?;
    let new = NewAnalysis::from_json(&body)?;
    let analysis = ctx
        .store
        .set_analysis(id, new)
        .await?
        .ok_or(ApiError::StockNotFound)?;
    ctx.stocks.invalidate(id).await;
    // Live viewers (the dashboard) learn of the new target without polling.
    let _ = ctx.events.send(FeedEvent::AnalysisSet {
        stock_id: id,
        analysis,
    });
    if analysis.target_hit {
        metrics::counter!(bourse_feed::metrics::TARGET_HITS).increment(1);
    }
    Ok((StatusCode::CREATED, Json(AnalysisView::from(analysis))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TicksQuery {
    /// Inclusive lower bound, RFC 3339 or a date.
    #[param(value_type = Option<TimeBound>)]
    from: Option<String>,
    /// Inclusive upper bound, RFC 3339 or a date (a date includes the whole day).
    #[param(value_type = Option<TimeBound>)]
    to: Option<String>,
    /// At most this many ticks (default 100, at most 1000; above: 400).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Cursor: the ticks before this instant (the last `timestamp` of the previous page); the
    /// `Link: rel="next"` header carries it.
    #[param(value_type = Option<TimeBound>)]
    before: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TickView {
    #[serde(serialize_with = "as_number")]
    #[schema(value_type = f64)]
    price: Decimal,
    availability: i64,
    timestamp: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A stock's ticks, newest first, a page at a time: when ticks remain,
/// `Link: <…&before=…>; rel="next"` names the next page.
#[utoipa::path(get, path = "/stocks/{stock_id}/ticks", tag = "stocks",
    params(("stock_id" = Uuid, Path), TicksQuery),
    responses(
        (status = 200, body = [TickView],
            headers(("Link" = String, description = "`<…>; rel=\"next\"` when ticks remain"))),
        (status = 400, description = "not a UUID, unknown parameter, bad value, a `limit` over the maximum"),
        (status = 404)))]
pub async fn ticks(
    State(ctx): State<ApiContext>,
    OriginalUri(uri): OriginalUri,
    PathParams(raw): PathParams<String>,
    QueryParams(q): QueryParams<TicksQuery>,
) -> Result<Response, ApiError> {
    let id = stock_id(&raw)?;
    let limit = check_limit(q.limit, 100, 1000)?;
    let from = super::time_bound("from", q.from.as_deref(), false)?;
    let to = super::time_bound("to", q.to.as_deref(), true)?;
    let before = super::time_bound("before", q.before.as_deref(), false)?;
    // Instants are stored to the microsecond: the one before `before` is the last to include.
    let to = match before.map(|b| b - TimeDelta::microseconds(1)) {
        Some(b) => Some(to.map_or(b, |t| t.min(b))),
        None => to,
    };
    if ctx.store.get_stock(id).await?.is_none() {
        return Err(ApiError::StockNotFound);
    }
    let mut rows = ctx.store.ticks(id, from, to, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let views: Vec<TickView> = rows
        .iter()
        .map(|t| TickView {
            price: t.price,
            availability: t.availability,
            timestamp: rfc3339(t.timestamp),
        })
        .collect();
    let mut response = Json(views).into_response();
    if let Some(last) = rows.last().filter(|_| more) {
        let mut query = Vec::new();
        for (key, value) in [("from", &q.from), ("to", &q.to)] {
            if let Some(v) = value {
                query.push((key, v.clone()));
            }
        }
        query.push(("limit", limit.to_string()));
        query.push((
            "before",
            last.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
        ));
        link_next(&mut response, uri.path(), &query);
    }
    Ok(response)
}

#[derive(Serialize)]
struct TickEvent<'a> {
    stock_id: Uuid,
    name: &'a str,
    #[serde(serialize_with = "as_number")]
    price: Decimal,
    availability: i64,
    timestamp: String,
}

#[derive(Serialize)]
struct TargetHitEvent {
    stock_id: Uuid,
    #[serde(serialize_with = "as_number")]
    target: Decimal,
    #[serde(rename = "type")]
    kind: TargetType,
    #[serde(serialize_with = "as_number")]
    price: Decimal,
    timestamp: String,
}

#[derive(Serialize)]
struct AnalysisEvent {
    stock_id: Uuid,
    #[serde(flatten)]
    analysis: AnalysisView,
}

fn sse_event(event: FeedEvent) -> Option<Event> {
    let (name, data) = match event {
        FeedEvent::Tick(t) => (
            "tick",
            serde_json::to_string(&TickEvent {
                stock_id: t.stock_id,
                name: &t.name,
                price: t.price,
                availability: t.availability,
                timestamp: rfc3339(t.timestamp),
            }),
        ),
        FeedEvent::TargetHit(h) => (
            "target_hit",
            serde_json::to_string(&TargetHitEvent {
                stock_id: h.stock_id,
                target: h.target,
                kind: h.kind,
                price: h.price,
                timestamp: rfc3339(h.timestamp),
            }),
        ),
        FeedEvent::AnalysisSet { stock_id, analysis } => (
            "analysis",
            serde_json::to_string(&AnalysisEvent {
                stock_id,
                analysis: analysis.into(),
            }),
        ),
    };
    data.ok().map(|d| Event::default().event(name).data(d))
}

/// Server-Sent Events: `tick` for every committed tick, `target_hit` when a target flips,
/// `analysis` (`{"stock_id","target","type","target_hit"}`) when an admin sets a target through
/// this replica. A slow client skips what it could not keep up with rather than holding memory.
#[utoipa::path(get, path = "/stocks/stream", tag = "stocks",
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`tick`, `target_hit` and `analysis` events"),
        (status = 503, description = "as many streams as `BOURSE_HTTP_MAX_STREAMS` are open; see `Retry-After`")))]
pub async fn stream(
    State(ctx): State<ApiContext>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // The permit lives as long as the stream, so at most `max_streams` are open at once.
    let permit = ctx.streams.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!(crate::server::REFUSED, "what" => "stream").increment(1);
        ApiError::Busy {
            message: "too many open event streams; retry later".into(),
            retry_after: 5,
        }
    })?;
    let events = BroadcastStream::new(ctx.events.subscribe())
        .filter_map(|e| async move { e.ok().and_then(sse_event).map(Ok) })
        .take_until(ctx.shutdown.clone().cancelled_owned())
        .map(move |event| {
            let _held = &permit;
            event
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
