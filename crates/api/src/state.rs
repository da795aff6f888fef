//! What every handler can reach: the `ApiContext` (cheap to clone, all shared state behind `Arc`).

use crate::cache::StockCache;
use crate::credential_cache::CredentialCache;
use crate::identity::ClientAddrSource;
use crate::jwt::JwtKeys;
use crate::login::Logins;
use crate::page::Paging;
use crate::quota::Quota;
use crate::request_log::RequestLog;
use crate::series_cache::SeriesCache;
use bourse_feed::FeedEvent;
use bourse_quotes::QuoteClient;
use bourse_store::group_commit::GroupCommit;
use bourse_store::quotes::QuoteRecord;
use bourse_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

/// Readiness of the dependencies that are not the database (which is pinged on demand).
#[derive(Clone, Default)]
pub struct Readiness {
    /// True once the feed consumer's subscription is acknowledged (always true embedded).
    pub feed: Arc<AtomicBool>,
}

impl Readiness {
    pub fn feed_ready(&self) -> bool {
        self.feed.load(Ordering::Acquire)
    }
}

/// The handlers' shared state. axum clones it for every extractor and middleware of every
/// request, so it is one pointer (docs/decisions/0001-api-state-is-one-pointer.md).
#[derive(Clone)]
pub struct ApiContext(Arc<ApiContextInner>);

impl std::ops::Deref for ApiContext {
    type Target = ApiContextInner;

    fn deref(&self) -> &ApiContextInner {
        &self.0
    }
}

/// What [`ApiContext`] points to.
pub struct ApiContextInner {
    pub store: Store,
    /// Quote-history rows of concurrent requests, committed together.
    pub history: GroupCommit<(uuid::Uuid, QuoteRecord)>,
    pub events: broadcast::Sender<FeedEvent>,
    pub stocks: Arc<StockCache>,
    /// Rendered time-series and indicator answers, per (symbol, query).
    pub series: Arc<SeriesCache>,
    pub credentials: Arc<CredentialCache>,
    /// Password checks: throttled, bounded in cost.
    pub logins: Logins,
    pub readiness: Readiness,
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled at shutdown so that long-lived responses (SSE) end and the server can stop.
    pub shutdown: CancellationToken,
    pub jwt: Arc<JwtKeys>,
    /// The quote service: in-process, over HTTP or over RabbitMQ, behind one trait.
    pub quotes: Arc<dyn QuoteClient>,
    /// Where the client address comes from (quota key of anonymous callers).
    pub client_addr: Arc<ClientAddrSource>,
    /// Per-day quotas; `None` when every limit is 0.
    pub quota: Option<Arc<Quota>>,
    /// The request log; `None` when off.
    pub request_log: Option<RequestLog>,
    /// One permit per event stream (SSE) that may be open at once.
    pub streams: Arc<Semaphore>,
    /// Longest a request may run before it is answered with a timeout.
    pub request_timeout: Duration,
    /// Page sizes of the series and `/stocks`.
    pub paging: Paging,
}

/// Bounds on the API's memory and time, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long hot reads may be served from memory; zero turns the read caches off.
    pub read_cache_ttl: Duration,
    /// Memory the cached stocks may take, in bytes (approximate: their serialised size).
    pub stock_cache_bytes: u64,
    /// Memory the cached time-series answers may take, in bytes.
    pub series_cache_bytes: u64,
    /// Event streams (SSE) open at once; more are answered 503.
    pub max_streams: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_cache_ttl: Duration::from_millis(50),
            stock_cache_bytes: 16 << 20,
            series_cache_bytes: 64 << 20,
            max_streams: 1000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the API needs from the outside besides the store.
pub struct Services {
    pub jwt: JwtKeys,
    pub quotes: Arc<dyn QuoteClient>,
    pub gatekeeping: Gatekeeping,
    pub logins: Logins,
    pub paging: Paging,
}

/// What the [`crate::gate`] uses: how the client address is found, the quotas and the request
/// log; everything that watches the traffic rather than serving it. The default watches nothing.
#[derive(Default)]
pub struct Gatekeeping {
    pub client_addr: ClientAddrSource,
    pub quota: Option<Quota>,
    pub request_log: Option<RequestLog>,
}

impl ApiContext {
    pub fn new(
        store: Store,
        events: broadcast::Sender<FeedEvent>,
        readiness: Readiness,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
        limits: Limits,
        services: Services,
    ) -> ApiContext {
        ApiContext(Arc::new(ApiContextInner {
            history: store.history_writer(),
            store,
            events,
            stocks: Arc::new(StockCache::new(
                limits.read_cache_ttl,
                limits.stock_cache_bytes,
            )),
            series: Arc::new(SeriesCache::new(
                limits.read_cache_ttl,
                limits.series_cache_bytes,
            )),
            credentials: Arc::new(CredentialCache::new(Duration::from_secs(60))),
            logins: services.logins,
            readiness,
            metrics,
            shutdown,
            jwt: Arc::new(services.jwt),
            quotes: services.quotes,
            client_addr: Arc::new(services.gatekeeping.client_addr),
            quota: services.gatekeeping.quota.map(Arc::new),
            request_log: services.gatekeeping.request_log,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            request_timeout: limits.request_timeout,
            paging: services.paging,
        }))
    }
}
