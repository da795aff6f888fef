//! Orders: accept an order durably, then let the relay place it at the exchange.
//!
//! `POST /orders` answers 201 only once the order and its outbox row are committed together, so
//! the exchange's reliability never touches this endpoint. Any failure before that commit is the
//! order API's 500 `{"message": "Internal server error while placing the order"}`.

use crate::auth::AuthUser;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::page::{check_limit, link_next};
use crate::{ApiContext, ApiError};
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bourse_domain::money::as_number_opt;
use bourse_domain::order::{NewOrder, OrderStatus};
use bourse_store::orders::{Creation, Order, OrderEvent, OrderQuery};
use bourse_store::users::{Role, User};
use bourse_store::StoreError;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(detail))
        .route("/orders/{id}/events", get(events))
}

/// Longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

/// The body of `POST /orders` (documentation; validation is [`NewOrder::from_json`], which
/// enforces exactly these constraints): a market order has no `limit_price`, a limit order needs
/// one.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(dead_code)]
pub enum OrderBody {
    Market {
        #[serde(flatten)]
        order: OrderFields,
        /// Absent (or null): a market order has no limit price.
        #[schema(value_type = Option<NoPrice>, inline)]
        limit_price: Option<()>,
    },
    Limit {
        #[serde(flatten)]
        order: OrderFields,
        /// > 0, at most 1000000000, at most 2 decimals.
        #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1000000000, multiple_of = 0.01, example = 150.25)]
        limit_price: f64,
    },
}

/// The schema of a value that must be null.
pub struct NoPrice;

impl utoipa::PartialSchema for NoPrice {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Null)
            .into()
    }
}

impl utoipa::ToSchema for NoPrice {}

/// The fields of every order.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct OrderFields {
    #[schema(inline)]
    side: OrderSide,
    /// Exactly 12 characters (ISIN-sized), no control character.
    #[schema(
        min_length = 12,
        max_length = 12,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{12}$",
        example = "US0378331005"
    )]
    instrument: String,
    /// An integer > 0.
    #[schema(minimum = 1, example = 10)]
    quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderSide {
    Buy,
    Sell,
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The answer of `POST /orders`: exactly these eight keys.
#[derive(Serialize, ToSchema)]
pub struct CreatedOrderView {
    id: Uuid,
    created_at: String,
    #[serde(rename = "type")]
    #[schema(example = "limit")]
    kind: &'static str,
    #[schema(example = "buy")]
    side: &'static str,
    instrument: String,
    #[serde(serialize_with = "as_number_opt")]
    #[schema(value_type = Option<f64>)]
    limit_price: Option<Decimal>,
    quantity: i64,
    #[schema(example = "pending")]
    status: &'static str,
}

impl From<&Order> for CreatedOrderView {
    fn from(o: &Order) -> Self {
        CreatedOrderView {
            id: o.id,
            created_at: instant(o.created_at),
            kind: o.order.order_type().as_str(),
            side: o.order.side.as_str(),
            instrument: o.order.instrument.as_str().to_string(),
            limit_price: o.order.limit_price(),
            quantity: o.order.quantity.get(),
            status: o.status.as_str(),
        }
    }
}

/// An order with its placement state.
#[derive(Serialize, ToSchema)]
pub struct OrderView {
    #[serde(flatten)]
    order: CreatedOrderView,
    /// Placement attempts so far.
    attempts: i32,
    /// When the exchange placed it.
    placed_at: Option<String>,
    /// The error of the last failed attempt, if any.
    last_error: Option<String>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            order: o.into(),
            attempts: o.attempts,
            placed_at: o.placed_at.map(instant),
            last_error: o.last_error.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrderEventView {
    #[schema(example = "order.placed")]
    event: String,
    at: String,
    #[schema(value_type = Object)]
    data: Value,
}

impl From<&OrderEvent> for OrderEventView {
    fn from(e: &OrderEvent) -> Self {
        OrderEventView {
            event: e.event.clone(),
            at: instant(e.at),
            data: e.data.clone(),
        }
    }
}

/// The shape of an `Idempotency-Key`, as documented and enforced.
const KEY_PATTERN: &str = "^[!-~]{1,255}$";

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to 255 visible ASCII characters ({KEY_PATTERN})"
            ))
        })?;
    Ok(Some(key.to_string()))
}

/// Places an order. 201 once the order is stored and its placement guaranteed; with an
/// `Idempotency-Key` already used by the caller for the same order, 200 and the first order.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = OrderBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        pattern = "^[!-~]{1,255}$",
        description = "makes retries safe: the same key (per user) returns the first order")),
    responses(
        (status = 201, body = CreatedOrderView, description = "stored; it will be placed",
            headers(("Location" = String, description = "the order's URL"))),
        (status = 200, body = CreatedOrderView, description = "a retry: the first order",
            headers(("Location" = String, description = "the order's URL"))),
        (status = 400, description = "not JSON, a malformed `Idempotency-Key`"), (status = 401),
        (status = 409, description = "the key was used with a different order"),
        (status = 422, description = "a field is invalid"),
        (status = 500, description = "not stored: {\"message\": \"Internal server error while placing the order\"}"),
        (status = 503, description = "timed out (`BOURSE_REQUEST_TIMEOUT_SECS`): the order may have been stored; repeat with the same `Idempotency-Key` to get it")),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn create(
    State(ctx): State<ApiContext>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let new = NewOrder::from_json(&body)?;
    let creation = match ctx.store.create_order(user.id, &new, key.as_deref()).await {
        Ok(c) => c,
        Err(StoreError::Conflict(m)) => return Err(ApiError::Conflict(m)),
        Err(e) => return Err(ApiError::OrderNotPlaced(e.into())),
    };
    let (status, order) = match &creation {
        Creation::Created(o) => {
            metrics::counter!("bourse_orders_total", "status" => "created").increment(1);
            (StatusCode::CREATED, o)
        }
        Creation::Replayed(o) => (StatusCode::OK, o),
    };
    let mut response = (status, Json(CreatedOrderView::from(order))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `placed` or `failed`.
    #[param(pattern = "^(pending|placed|failed)$")]
    status: Option<String>,
    /// At most this many orders (default 50, at most 500; above: 400).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Cursor: the id of the last order of the previous page (also in the `Link` header).
    before: Option<Uuid>,
}

/// The caller's orders (an admin's: everyone's), newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", operation_id = "list_orders", params(ListQuery),
    responses((status = 200, body = [OrderView],
            headers(("Link" = String, description = "`<…>; rel=\"next\"` when orders remain"))),
        (status = 400, description = "unknown parameter, bad value, a `limit` over the maximum"),
        (status = 401)),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn list(
    State(ctx): State<ApiContext>,
    OriginalUri(uri): OriginalUri,
    AuthUser(user): AuthUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(OrderStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest("status must be pending, placed or failed".into())
        })?),
    };
    let limit = check_limit(q.limit, 50, 500)?;
    let query = OrderQuery {
        user: (user.role != Role::Admin).then_some(user.id),
        status,
        before: q.before,
        limit: limit + 1,
    };
    let mut orders = ctx.store.list_orders(&query).await?;
    let more = orders.len() > limit as usize;
    orders.truncate(limit as usize);
    let body: Vec<OrderView> = orders.iter().map(OrderView::from).collect();
    let mut response = Json(body).into_response();
    if let Some(last) = orders.last().filter(|_| more) {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.as_str().to_string()));
        }
        query.push(("before", last.id.to_string()));
        link_next(&mut response, uri.path(), &query);
    }
    Ok(response)
}

/// The order if `user` may see it: its owner or an admin. Anyone else gets the same 404 as for
/// an order that does not exist.
async fn visible_order(ctx: &ApiContext, user: &User, raw_id: &str) -> Result<Order, ApiError> {
    let not_found = || ApiError::NotFound("order not found".into());
    let id = Uuid::parse_str(raw_id).map_err(|_| not_found())?;
    let order = ctx.store.get_order(id).await?.ok_or_else(not_found)?;
    if order.user_id != user.id && user.role != Role::Admin {
        return Err(not_found());
    }
    Ok(order)
}

/// One order with its placement state (owner or admin).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", operation_id = "get_order",
    params(("id" = Uuid, Path, description = "the order's id")),
    responses((status = 200, body = OrderView), (status = 401), (status = 404)),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn detail(
    State(ctx): State<ApiContext>,
    AuthUser(user): AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order = visible_order(&ctx, &user, &id).await?;
    Ok(Json(OrderView::from(&order)))
}

/// The order's history, oldest first: `order.created`, `order.placement_failed`, `order.placed`,
/// `order.failed` (owner or admin).
#[utoipa::path(get, path = "/orders/{id}/events", tag = "orders",
    params(("id" = Uuid, Path, description = "the order's id")),
    responses((status = 200, body = [OrderEventView]), (status = 401), (status = 404)),
    security(("basic" = []), ("bearer" = []), ("token" = [])))]
pub async fn events(
    State(ctx): State<ApiContext>,
    AuthUser(user): AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Vec<OrderEventView>>, ApiError> {
    let order = visible_order(&ctx, &user, &id).await?;
    let events = ctx.store.order_events(order.id).await?;
    Ok(Json(events.iter().map(OrderEventView::from).collect()))
}
