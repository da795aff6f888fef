//! Configuration: built-in defaults, then `bourse.toml` (or `--config FILE`), then `BOURSE_*`
//! environment variables, then command-line flags; each layer overrides the one before.

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The embedded default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://bourse.db";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to listen on; each role has its own default port.
    pub http_addr: Option<String>,
    pub database_url: String,
    pub database_max_connections: u32,
    /// Apply migrations at start.
    pub migrate: bool,
    /// Unset: an in-process simulated market feeds the ingestor.
    pub mqtt_url: Option<String>,
    pub mqtt_topic: String,
    /// Stable id of the persistent MQTT session; defaults to `bourse-<hostname>`.
    pub mqtt_client_id: Option<String>,
    /// Shared-subscription group, so that API replicas split the feed.
    pub mqtt_shared_group: Option<String>,
    /// Simulated ticks per second (embedded feed).
    pub feed_rate: f64,
    pub feed_stocks: usize,
    /// Largest batch of ticks committed in one transaction.
    pub ingest_batch: usize,
    /// How long hot reads may be served from memory (milliseconds).
    pub read_cache_ms: u64,
    /// Seed demo data (users admin/admin and johndoe/john) into an empty database. Defaults to
    /// true only when no database URL was configured.
    pub demo: Option<bool>,
    pub log: String,
    pub log_format: LogFormat,
    /// RabbitMQ (`amqp://user:pw@host:5672/%2f`): quote RPC and order events.
    pub amqp_url: Option<String>,
    /// The quote service over HTTP, used when no AMQP URL is set.
    pub quote_service_url: Option<String>,
    /// RabbitMQ queue of quote requests.
    pub quote_queue: String,
    pub stooq_url: String,
    pub alphavantage_url: String,
    pub alphavantage_key: Option<String>,
    /// How long a successful quote is reused (seconds; 0 disables the cache).
    pub quote_cache_secs: u64,
    /// HS256 secret for JWTs; required unless running on embedded defaults.
    pub jwt_secret: Option<String>,
    /// Orders: `embedded` runs the outbox relay inside `serve`; `off` when relays run as their
    /// own role (`bourse relay`).
    pub relay: RelayMode,
    /// The exchange over HTTP (`bourse exchange`); unset: the simulated exchange in-process.
    pub exchange_url: Option<String>,
    /// Simulated exchange: share of first submissions that fail (the seed's 10%).
    pub exchange_failure_rate: f64,
    /// Simulated exchange: time to place an order (the seed's 0.5 s).
    pub exchange_latency_ms: u64,
    /// Longest wait for the exchange's answer to one placement.
    pub exchange_timeout_ms: u64,
    /// Placement attempts before an order is `failed`.
    pub order_max_attempts: u32,
    /// Placements in flight per relay.
    pub relay_concurrency: usize,
    /// How long a relay's claim on an order lasts; must exceed `exchange_timeout_ms`.
    pub relay_lease_ms: u64,
    /// Backoff between placement attempts: first ceiling and largest delay.
    pub order_retry_base_ms: u64,
    pub order_retry_max_ms: u64,
    /// Redis (`redis://host:6379`): quota counters shared by all API replicas. Unset: each
    /// process counts in its own memory.
    pub redis_url: Option<String>,
    /// Requests per rolling day per client address, for callers without valid credentials;
    /// 0 = unlimited.
    pub quota_anon_per_day: u64,
    /// Requests per rolling day per user; 0 = unlimited.
    pub quota_user_per_day: u64,
    /// Prefix of the quota keys in Redis.
    pub quota_redis_prefix: String,
    /// Serve busy callers far from their limit from reservations taken in Redis (about one
    /// Redis call a second per busy caller instead of one per batch of requests).
    pub quota_reservations: bool,
    /// Header in which a trusted reverse proxy passes the client address (`X-Forwarded-For`,
    /// `X-Real-IP`, `Forwarded`); its last entry is used. Unset: the socket's peer address.
    pub trusted_proxy_header: Option<String>,
    /// The request log file; empty: off.
    pub request_log: String,
    /// Rotate the request log before it exceeds this many bytes (0: never).
    pub request_log_max_bytes: u64,
    /// Rotated request logs kept (`.1` … `.N`).
    pub request_log_keep: usize,
    /// Rows per page of the time series and `GET /stocks` when `limit` is not given.
    pub page_default: u32,
    /// Largest `limit` those accept; above it a 400.
    pub page_max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    Embedded,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: None,
            database_url: DEFAULT_DATABASE_URL.into(),
            database_max_connections: 16,
            migrate: true,
            mqtt_url: None,
            mqtt_topic: "thndr-trading".into(),
            mqtt_client_id: None,
            mqtt_shared_group: None,
            feed_rate: 5.0,
            feed_stocks: 3,
            ingest_batch: 2000,
            read_cache_ms: 50,
            demo: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            amqp_url: None,
            quote_service_url: None,
            quote_queue: "bourse.quotes".into(),
            stooq_url: "https://stooq.com".into(),
            alphavantage_url: "https://www.alphavantage.co".into(),
            alphavantage_key: None,
            quote_cache_secs: 60,
            jwt_secret: None,
            relay: RelayMode::Embedded,
            exchange_url: None,
            exchange_failure_rate: 0.1,
            exchange_latency_ms: 500,
            exchange_timeout_ms: 10_000,
            order_max_attempts: 20,
            relay_concurrency: 1024,
            relay_lease_ms: 30_000,
            order_retry_base_ms: 200,
            order_retry_max_ms: 60_000,
            redis_url: None,
            quota_anon_per_day: 100,
            quota_user_per_day: 1000,
            quota_redis_prefix: "bourse:quota:".into(),
            quota_reservations: true,
            trusted_proxy_header: None,
            request_log: "apicalls.log".into(),
            request_log_max_bytes: 10 * 1024 * 1024,
            request_log_keep: 5,
            page_default: 5_000,
            page_max: 10_000,
        }
    }
}

impl Config {
    /// Loads the layers. `file` is `--config`; without it `bourse.toml` is read if present.
    pub fn load(file: Option<&Path>, flags: &impl Serialize) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} not found", path.display());
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("bourse.toml")),
        }
        let mut config: Config = figment
            .merge(Env::prefixed("BOURSE_"))
            .merge(Serialized::defaults(flags))
            .extract()
            .context("invalid configuration")?;
        // An empty variable means "unset", as shells and compose files often pass them.
        config.mqtt_url = config.mqtt_url.filter(|u| !u.trim().is_empty());
        config.mqtt_shared_group = config.mqtt_shared_group.filter(|g| !g.trim().is_empty());
        for value in [
            &mut config.amqp_url,
            &mut config.quote_service_url,
            &mut config.alphavantage_key,
            &mut config.jwt_secret,
            &mut config.exchange_url,
            &mut config.redis_url,
            &mut config.trusted_proxy_header,
        ] {
            *value = value.take().filter(|v| !v.trim().is_empty());
        }
        Ok(config)
    }

    /// True when no database was configured: the laptop default, where demo data and generated
    /// secrets are acceptable.
    pub fn database_is_default(&self) -> bool {
        self.database_url == DEFAULT_DATABASE_URL
    }

    pub fn demo_enabled(&self) -> bool {
        self.demo.unwrap_or_else(|| self.database_is_default())
    }

    pub fn mqtt_client_id(&self) -> String {
        self.mqtt_client_id
            .clone()
            .unwrap_or_else(|| format!("bourse-{}", bourse_orders::relay::host_name()))
    }
}
