//! The quote service over HTTP, for deployments without RabbitMQ: the routes the quote-service
//! role mounts (`GET /internal/quote?symbol=`, `GET /internal/daily?symbol=`) and the client the
//! API uses to call them. Bodies are the same envelope as over AMQP (see [`crate::wire`]).

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{answer, encode, Reply, RpcRequest};
use crate::{normalize_symbol, DailySummary, Kind, Quote, QuoteClient, QuoteError};

/// Path of the quote route.
pub const QUOTE_PATH: &str = "/internal/quote";
/// Path of the daily-summary route.
pub const DAILY_PATH: &str = "/internal/daily";

/// Routes `GET /internal/quote?symbol=aapl.us` and `GET /internal/daily?symbol=ibm`, answering
/// `{"data": {...}}` (200) or `{"error": {"code", "message"}}` with the error's status.
pub fn router(client: Arc<dyn QuoteClient>) -> Router {
    Router::new()
        .route(QUOTE_PATH, get(quote_route))
        .route(DAILY_PATH, get(daily_route))
        .with_state(client)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SymbolQuery {
    symbol: Option<String>,
}

async fn quote_route(
    State(client): State<Arc<dyn QuoteClient>>,
    query: Result<Query<SymbolQuery>, QueryRejection>,
) -> Response {
    serve(client.as_ref(), Kind::Quote, query).await
}

async fn daily_route(
    State(client): State<Arc<dyn QuoteClient>>,
    query: Result<Query<SymbolQuery>, QueryRejection>,
) -> Response {
    serve(client.as_ref(), Kind::Daily, query).await
}

async fn serve(
    client: &dyn QuoteClient,
    kind: Kind,
    query: Result<Query<SymbolQuery>, QueryRejection>,
) -> Response {
    let symbol = match query {
        Ok(Query(SymbolQuery {
            symbol: Some(symbol),
        })) => symbol,
        Ok(_) => return reply_error(QuoteError::BadRequest("symbol is required".into())),
        Err(rejection) => {
            return reply_error(QuoteError::BadRequest(format!(
                "bad query string: {}",
                rejection.body_text()
            )))
        }
    };
    let (body, error) = answer(client, &RpcRequest { symbol, kind }).await;
    let status = error.map(|e| status_of(&e)).unwrap_or(StatusCode::OK);
    json_response(status, body)
}

fn reply_error(error: QuoteError) -> Response {
    let status = status_of(&error);
    let (body, _) = encode::<()>(Err(error));
    json_response(status, body)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The HTTP status for an error, as an axum type.
pub fn status_of(error: &QuoteError) -> StatusCode {
    StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// Calls a remote quote service over HTTP (`BOURSE_QUOTE_SERVICE_URL`).
#[derive(Debug, Clone)]
pub struct HttpQuoteClient {
    client: reqwest::Client,
    base_url: String,
}

impl HttpQuoteClient {
    /// `base_url` like `http://quote-service:8001`; `timeout` bounds each call (5 s by contract).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, QuoteError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build()
            .map_err(|e| {
                tracing::error!(error = %e, "cannot build the HTTP client");
                QuoteError::Unavailable("HTTP client unavailable".into())
            })?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn call<T: DeserializeOwned>(&self, path: &str, symbol: &str) -> Result<T, QuoteError> {
        // Checked here too: a malformed symbol is the caller's fault, not worth a round trip.
        let symbol = normalize_symbol(symbol)?;
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .query(&[("symbol", symbol.as_str())])
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport_error(&e))?;
        match serde_json::from_slice::<Reply<T>>(&bytes) {
            Ok(reply) => reply.into_result(),
            Err(e) => {
                // Not our envelope: a proxy, a wrong URL, or a newer data shape answered.
                tracing::warn!(%status, error = %e, "quote service answered without an envelope");
                Err(if status.is_server_error() {
                    QuoteError::Unavailable("quote service is unavailable".into())
                } else {
                    QuoteError::BadUpstream(format!(
                        "quote service answered HTTP {} unreadably",
                        status.as_u16()
                    ))
                })
            }
        }
    }
}

fn transport_error(error: &reqwest::Error) -> QuoteError {
    tracing::warn!(error = ?error, "quote service request failed");
    if error.is_timeout() {
        QuoteError::Timeout("quote service did not answer in time".into())
    } else if error.is_connect() {
        QuoteError::Unavailable("quote service is unreachable".into())
    } else {
        QuoteError::BadUpstream("quote service answered unreadably".into())
    }
}

#[async_trait]
impl QuoteClient for HttpQuoteClient {
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        self.call(QUOTE_PATH, symbol).await
    }

    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        self.call(DAILY_PATH, symbol).await
    }
}
