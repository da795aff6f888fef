//! A local stand-in for stooq and AlphaVantage, speaking their real formats from the fixtures in
//! `crates/quotes/fixtures/`. Tests and demos run without the internet and without spending
//! real quota; the hit counters let tests prove what the cache spared, and the modes reproduce
//! the upstream troubles the service must map (throttling, slowness, 500s, garbage).
//!
//! Mount [`FakeUpstream::router`] anywhere, or [`FakeUpstream::start`] it on `127.0.0.1:0`; then
//! point `BOURSE_STOOQ_URL` and `BOURSE_ALPHAVANTAGE_URL` at it.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

const STOOQ: &[(&str, &str)] = &[
    ("aapl.us", include_str!("../fixtures/stooq/aapl.us.csv")),
    ("msft.us", include_str!("../fixtures/stooq/msft.us.csv")),
    ("t.us", include_str!("../fixtures/stooq/t.us.csv")),
    ("appl.us", include_str!("../fixtures/stooq/appl.us.csv")),
];
const STOOQ_UNKNOWN: &str = include_str!("../fixtures/stooq/unknown.csv");
const STOOQ_THROTTLED: &str = include_str!("../fixtures/stooq/throttled.txt");

const ALPHAVANTAGE: &[(&str, &str)] = &[("ibm", include_str!("../fixtures/alphavantage/ibm.json"))];
const AV_ERROR: &str = include_str!("../fixtures/alphavantage/error.json");
const AV_NOTE: &str = include_str!("../fixtures/alphavantage/note.json");
const AV_INFORMATION: &str = include_str!("../fixtures/alphavantage/information.json");

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeMode {
    /// Fixtures as the real providers would answer.
    #[default]
    Normal,
    /// Over quota: stooq's plain text, AlphaVantage's `"Note"`.
    Throttled,
    /// Over quota with AlphaVantage's newer `"Information"` wording (stooq as `Throttled`).
    ThrottledInformation,
    /// Normal answers after this delay (for timeouts).
    Slow(Duration),
    /// HTTP 500 with an HTML page.
    ServerError,
    /// 200 with a body that is neither CSV nor JSON.
    Garbage,
}

/// The fake providers' state: mode and hit counters. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct FakeUpstream {
    state: Arc<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    mode: Mutex<FakeMode>,
    stooq_hits: AtomicUsize,
    alphavantage_hits: AtomicUsize,
}

impl FakeUpstream {
    pub fn new() -> Self {
        Self::default()
    }

    /// `GET /q/l/` (stooq) and `GET /query` (AlphaVantage).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/q/l/", get(stooq))
            .route("/query", get(alphavantage))
            .with_state(self.clone())
    }

    /// Serves the fake on `127.0.0.1:0`; it stops when the returned server is dropped.
    pub async fn start() -> std::io::Result<FakeServer> {
        let upstream = FakeUpstream::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = upstream.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake upstream stopped");
            }
        });
        Ok(FakeServer {
            upstream,
            addr,
            task,
        })
    }

    pub fn set_mode(&self, mode: FakeMode) {
        *self
            .state
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    pub fn mode(&self) -> FakeMode {
        *self
            .state
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests received on the stooq route.
    pub fn stooq_hits(&self) -> usize {
        self.state.stooq_hits.load(Ordering::SeqCst)
    }

    /// Requests received on the AlphaVantage route.
    pub fn alphavantage_hits(&self) -> usize {
        self.state.alphavantage_hits.load(Ordering::SeqCst)
    }

    /// Applies the troubled modes; `None` means: answer normally.
    async fn trouble(&self) -> Option<Response> {
        match self.mode() {
            FakeMode::Slow(delay) => {
                tokio::time::sleep(delay).await;
                None
            }
            FakeMode::ServerError => Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>500 Internal Server Error</body></html>",
                )
                    .into_response(),
            ),
            FakeMode::Garbage => Some(
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>Service temporarily unavailable</body></html>",
                )
                    .into_response(),
            ),
            FakeMode::Normal | FakeMode::Throttled | FakeMode::ThrottledInformation => None,
        }
    }
}

/// A fake upstream listening on a local port.
#[derive(Debug)]
pub struct FakeServer {
    upstream: FakeUpstream,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// `http://127.0.0.1:PORT`, the base URL for both providers.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::ops::Deref for FakeServer {
    type Target = FakeUpstream;

    fn deref(&self) -> &FakeUpstream {
        &self.upstream
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET /q/l/?s=aapl.us&f=sd2t2ohlcvn&h&e=csv`
async fn stooq(
    State(fake): State<FakeUpstream>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    fake.state.stooq_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = fake.trouble().await {
        return response;
    }
    let well_formed = query.get("f").map(String::as_str) == Some("sd2t2ohlcvn")
        && query.get("e").map(String::as_str) == Some("csv")
        && query.contains_key("h");
    let Some(code) = query.get("s").filter(|s| !s.is_empty() && well_formed) else {
        return (StatusCode::BAD_REQUEST, "bad request").into_response();
    };
    if matches!(
        fake.mode(),
        FakeMode::Throttled | FakeMode::ThrottledInformation
    ) {
        return ([(header::CONTENT_TYPE, "text/plain")], STOOQ_THROTTLED).into_response();
    }
    let code = code.to_ascii_lowercase();
    let body = STOOQ
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, body)| (*body).to_owned())
        .unwrap_or_else(|| STOOQ_UNKNOWN.replace("{SYMBOL}", &code.to_ascii_uppercase()));
    ([(header::CONTENT_TYPE, "text/csv")], body).into_response()
}

/// `GET /query?function=TIME_SERIES_DAILY&symbol=IBM&apikey=K`
async fn alphavantage(
    State(fake): State<FakeUpstream>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    fake.state.alphavantage_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = fake.trouble().await {
        return response;
    }
    let json = |body: &str| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_owned(),
        )
            .into_response()
    };
    match fake.mode() {
        FakeMode::Throttled => return json(AV_NOTE),
        FakeMode::ThrottledInformation => return json(AV_INFORMATION),
        _ => {}
    }
    let well_formed = query.get("function").map(String::as_str) == Some("TIME_SERIES_DAILY")
        && query.get("apikey").is_some_and(|k| !k.is_empty());
    let symbol = query
        .get("symbol")
        .filter(|_| well_formed)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let body = ALPHAVANTAGE
        .iter()
        .find(|(s, _)| *s == symbol)
        .map(|(_, body)| *body)
        .unwrap_or(AV_ERROR);
    json(body)
}
