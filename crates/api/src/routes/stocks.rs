//! Live stocks: latest prices, analyst targets, tick history, and the live stream.

use crate::auth::AdminUser;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::{ApiContext, ApiError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bourse_domain::money::as_number;
use bourse_domain::{Analysis, NewAnalysis, TargetType};
use bourse_feed::FeedEvent;
use bourse_store::feed::{StockDetail, StockRow};
use chrono::{DateTime, SecondsFormat, Utc};
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
    #[param(value_type = Option<String>, example = "technical_analysis")]
    include: Option<Include>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Include {
    TechnicalAnalysis,
}

/// All stocks with their latest price and availability, ordered by name.
#[utoipa::path(get, path = "/stocks", tag = "stocks", params(ListQuery),
    responses(
        (status = 200, body = [StockView],
            description = "with `include=technical_analysis`, rows are `StockDetailView`s"),
        (status = 400)))]
pub async fn list(
    State(ctx): State<ApiContext>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    if let Some(Include::TechnicalAnalysis) = q.include {
        let rows = match ctx.stocks.detailed_list() {
            Some(rows) => rows,
            None => ctx
                .stocks
                .put_detailed_list(ctx.store.list_stocks_with_analysis().await?),
        };
        let views: Vec<StockDetailView> = rows.iter().map(StockDetailView::from).collect();
        return Ok(Json(views).into_response());
    }
    let rows = match ctx.stocks.list() {
        Some(rows) => rows,
        None => ctx.stocks.put_list(ctx.store.list_stocks().await?),
    };
    let views: Vec<StockView> = rows.iter().map(StockView::from).collect();
    Ok(Json(views).into_response())
}

/// One stock with its analyst target, if any.
#[utoipa::path(get, path = "/stocks/{stock_id}", tag = "stocks",
    params(("stock_id" = Uuid, Path, description = "the stock's id")),
    responses((status = 200, body = StockDetailView), (status = 400), (status = 404)))]
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

/// Sets (replaces) a stock's analyst target; judged at once against the current price.
#[utoipa::path(post, path = "/admin/stocks/{stock_id}/analysis", tag = "admin",
    params(("stock_id" = Uuid, Path)),
    request_body(content = Object, example = json!({"target": 29, "type": "UP"})),
    responses((status = 201, body = AnalysisView), (status = 401), (status = 403), (status = 404), (status = 422)),
    security(("basic" = []), ("bearer" = [])))]
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
#[serde(deny_unknown_fields)]
pub struct TicksQuery {
    /// Inclusive lower bound, RFC 3339 or a date.
    from: Option<String>,
    /// Inclusive upper bound, RFC 3339 or a date (a date includes the whole day).
    to: Option<String>,
    /// At most this many ticks (default 100, at most 1000).
    limit: Option<u32>,
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

/// A stock's ticks, newest first.
#[utoipa::path(get, path = "/stocks/{stock_id}/ticks", tag = "stocks",
    params(("stock_id" = Uuid, Path), TicksQuery),
    responses((status = 200, body = [TickView]), (status = 400), (status = 404)))]
pub async fn ticks(
    State(ctx): State<ApiContext>,
    PathParams(raw): PathParams<String>,
    QueryParams(q): QueryParams<TicksQuery>,
) -> Result<Json<Vec<TickView>>, ApiError> {
    let id = stock_id(&raw)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let from = super::time_bound("from", q.from.as_deref(), false)?;
    let to = super::time_bound("to", q.to.as_deref(), true)?;
    if ctx.store.get_stock(id).await?.is_none() {
        return Err(ApiError::StockNotFound);
    }
    let rows = ctx.store.ticks(id, from, to, limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|t| TickView {
                price: t.price,
                availability: t.availability,
                timestamp: rfc3339(t.timestamp),
            })
            .collect(),
    ))
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
    responses((status = 200, description = "text/event-stream of `tick`, `target_hit` and `analysis` events"),
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
