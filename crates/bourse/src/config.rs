//! Configuration: built-in defaults, then `bourse.toml` (or `--config FILE`), then `BOURSE_*`
//! environment variables, then command-line flags; each layer overrides the one before.

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use std::path::Path;
use std::time::Duration;

/// The embedded default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://bourse.db";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to listen on. Unset: 127.0.0.1 and the role's port (serve 8000, quote-service
    /// 8001, exchange 8002, relay 8003, streamer 8004).
    pub http_addr: Option<String>,
    /// `sqlite://path`, `sqlite:///abs/path` (created when missing) or `postgres://…`. May carry a
    /// password: a secret, logged only with the password masked (`roles::redact`).
    #[serde(serialize_with = "expose")]
    pub database_url: SecretString,
    /// Database connection pool size.
    pub database_max_connections: u32,
    /// SQLite only: `full` syncs every commit (survives a power cut), `normal` only checkpoints.
    pub sqlite_synchronous: bourse_store::SqliteSync,
    /// Apply migrations at start.
    pub migrate: bool,
    /// Unset: an in-process simulated market feeds the ingestor.
    pub mqtt_url: Option<String>,
    /// MQTT topic of the feed.
    pub mqtt_topic: String,
    /// Stable id of the persistent MQTT session; defaults to `bourse-<hostname>`.
    pub mqtt_client_id: Option<String>,
    /// Shared-subscription group, so that API replicas split the feed.
    pub mqtt_shared_group: Option<String>,
    /// Simulated ticks per second (embedded feed).
    pub feed_rate: f64,
    /// Stocks of the simulated feed (embedded).
    pub feed_stocks: usize,
    /// Largest batch of ticks committed in one transaction.
    pub ingest_batch: usize,
    /// Largest MQTT packet read; must cover the broker's `message_size_limit` plus the topic.
    pub mqtt_max_packet_bytes: usize,
    /// Feed messages over this size are dead letters (a tick is ~150 bytes).
    pub tick_max_bytes: usize,
    /// How far past its receive time a tick's timestamp may be (seconds); earlier than 1970 or
    /// later is a dead letter.
    pub tick_max_skew_secs: u64,
    /// Ticks older than this are deleted (their minute bars stay); 0 keeps them forever.
    pub tick_retention_days: u64,
    /// Dead letters older than this are deleted; 0 keeps them forever.
    pub dead_letter_retention_days: u64,
    /// At most this many dead letters are kept (the newest); 0 for no bound.
    pub dead_letter_max_rows: u64,
    /// Period of the retention job (seconds); it also runs at start.
    pub retention_interval_secs: u64,
    /// Rows per delete statement of the retention job.
    pub retention_batch: u32,
    /// How long hot reads may be served from memory (milliseconds).
    pub read_cache_ms: u64,
    /// How often each API replica looks for credential changes it was not notified of
    /// (milliseconds): the longest a disabled user, an old password or a revoked key still works.
    pub credentials_check_ms: u64,
    /// Seed demo data (users admin/admin and johndoe/john) into an empty database. Defaults to
    /// true only when no database URL was configured.
    pub demo: Option<bool>,
    /// Tracing filter (`info`, `bourse_feed=debug,info`, …).
    pub log: String,
    /// `text`, or `json` for structured logs.
    pub log_format: LogFormat,
    /// RabbitMQ (`amqp://user:pw@host:5672/%2f`): quote RPC and order events.
    #[serde(serialize_with = "expose_option")]
    pub amqp_url: Option<SecretString>,
    /// The quote service over HTTP, used when no AMQP URL is set.
    pub quote_service_url: Option<String>,
    /// RabbitMQ queue of quote requests.
    pub quote_queue: String,
    /// The stooq quote provider.
    pub stooq_url: String,
    /// The AlphaVantage provider (`GET /symbol/{symbol}`).
    pub alphavantage_url: String,
    /// AlphaVantage API key.
    #[serde(serialize_with = "expose_option")]
    pub alphavantage_key: Option<SecretString>,
    /// How long a successful quote is reused (seconds; 0 disables the cache).
    pub quote_cache_secs: u64,
    /// HS256 secret for JWTs; required unless running on embedded defaults.
    #[serde(serialize_with = "expose_option")]
    pub jwt_secret: Option<SecretString>,
    /// Orders: `embedded` runs the outbox relay inside `serve`; `off` when relays run as their
    /// own role (`bourse relay`).
    pub relay: RelayMode,
    /// The exchange over HTTP (`bourse exchange`); unset: the simulated exchange in-process.
    pub exchange_url: Option<String>,
    /// Simulated exchange: share of first submissions that fail.
    pub exchange_failure_rate: f64,
    /// Simulated exchange: time to place an order.
    pub exchange_latency_ms: u64,
    /// Longest wait for the exchange's answer to one placement.
    pub exchange_timeout_ms: u64,
    /// Placement attempts before an order is `failed`.
    pub order_max_attempts: u32,
    /// Placements in flight per relay.
    pub relay_concurrency: usize,
    /// How long a relay's claim on an order lasts; must exceed `exchange_timeout_ms`.
    pub relay_lease_ms: u64,
    /// Backoff between placement attempts: ceiling of the first delay (doubles each attempt,
    /// with jitter).
    pub order_retry_base_ms: u64,
    /// Backoff between placement attempts: largest delay.
    pub order_retry_max_ms: u64,
    /// Redis (`redis://host:6379`): quota counters shared by all API replicas. Unset: each
    /// process counts in its own memory. Also shares the login throttle's counts.
    #[serde(serialize_with = "expose_option")]
    pub redis_url: Option<SecretString>,
    /// Requests per rolling day per client address, for callers without valid credentials;
    /// 0 = unlimited.
    pub quota_anon_per_day: u64,
    /// Requests per rolling day per user; 0 = unlimited.
    pub quota_user_per_day: u64,
    /// Prefix of the quota keys in Redis.
    pub quota_redis_prefix: String,
    /// Header in which a trusted reverse proxy passes the client address (`X-Forwarded-For`,
    /// `X-Real-IP`, `Forwarded`); its last entry is used. Unset: the socket's peer address.
    pub trusted_proxy_header: Option<String>,
    /// The request log file; empty: off.
    pub request_log: String,
    /// Rotate the request log before it exceeds this many bytes (0: never).
    pub request_log_max_bytes: u64,
    /// Rotated request logs kept (`.1` … `.N`).
    pub request_log_keep: usize,
    /// Password hashes computed at once (each takes argon2's 19 MiB); 0: one per core.
    pub hash_concurrency: usize,
    /// How long a password check waits for a hashing slot before it is answered 503.
    pub hash_wait_ms: u64,
    /// Failed password logins (Basic, `/login`) per window for one account from one address
    /// (0: no limit).
    pub login_failures_per_account_address: u64,
    /// Failed password logins per window from one address, whatever the account (0: no limit).
    pub login_failures_per_address: u64,
    /// Failed password logins per window for one account, whatever the address (0: no limit,
    /// the default: it would let anyone lock an account's password logins).
    pub login_failures_per_account: u64,
    /// The login throttle's window, from a count's first failure (seconds).
    pub login_window_secs: u64,
    /// Prefix of the login throttle's keys in Redis.
    pub login_redis_prefix: String,
    /// HTTP: a request's head must arrive within this many seconds of the connection's opening
    /// or of the previous response (so idle keep-alive connections close after it too).
    pub http_header_timeout_secs: u64,
    /// HTTP: a connection on which no byte moves for this many seconds is closed (0: never).
    pub http_idle_timeout_secs: u64,
    /// HTTP: connections served at once per process; beyond, 503 (health is still answered).
    pub http_max_connections: usize,
    /// Event streams (`GET /stocks/stream`) open at once per process; beyond, 503.
    pub http_max_streams: usize,
    /// A request still running after this many seconds is answered with a timeout.
    pub request_timeout_secs: u64,
    /// Memory of the cached stocks (`GET /stocks/{id}`), in bytes.
    pub stock_cache_bytes: u64,
    /// Memory of the cached time-series and indicator answers, in bytes.
    pub series_cache_bytes: u64,
    /// Memory of the quote service's cached answers, per provider, in bytes.
    pub quote_cache_bytes: u64,
    /// Quote requests in one RabbitMQ message: the most the API's client sends, and the most
    /// the quote service answers (a larger or unknown message is refused, no upstream call).
    pub quote_max_batch: usize,
    /// Rows per page of the time series and `GET /stocks` when `limit` is not given.
    pub page_default: u32,
    /// Largest `limit` those accept; above it a 400.
    pub page_max: u32,
}

/// Figment layers the defaults through serde: secrets are written out for it only.
fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_option<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => expose(secret, s),
        None => s.serialize_none(),
    }
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
            sqlite_synchronous: bourse_store::SqliteSync::Full,
            migrate: true,
            mqtt_url: None,
            mqtt_topic: "thndr-trading".into(),
            mqtt_client_id: None,
            mqtt_shared_group: None,
            feed_rate: 5.0,
            feed_stocks: 3,
            ingest_batch: 2000,
            mqtt_max_packet_bytes: 1024 * 1024 + 64 * 1024,
            tick_max_bytes: 4096,
            tick_max_skew_secs: 300,
            tick_retention_days: 30,
            dead_letter_retention_days: 30,
            dead_letter_max_rows: 100_000,
            retention_interval_secs: 60,
            retention_batch: 1000,
            read_cache_ms: 50,
            credentials_check_ms: 1000,
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
            trusted_proxy_header: None,
            request_log: "apicalls.log".into(),
            request_log_max_bytes: 10 * 1024 * 1024,
            request_log_keep: 5,
            hash_concurrency: 0,
            hash_wait_ms: 1000,
            login_failures_per_account_address: 10,
            login_failures_per_address: 100,
            login_failures_per_account: 0,
            login_window_secs: 15 * 60,
            login_redis_prefix: "bourse:login:".into(),
            http_header_timeout_secs: 30,
            http_idle_timeout_secs: 60,
            http_max_connections: 4096,
            http_max_streams: 1000,
            request_timeout_secs: 30,
            stock_cache_bytes: 16 << 20,
            series_cache_bytes: 64 << 20,
            quote_cache_bytes: 8 << 20,
            quote_max_batch: 32,
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
            &mut config.quote_service_url,
            &mut config.exchange_url,
            &mut config.trusted_proxy_header,
        ] {
            *value = value.take().filter(|v| !v.trim().is_empty());
        }
        for secret in [
            &mut config.amqp_url,
            &mut config.alphavantage_key,
            &mut config.jwt_secret,
            &mut config.redis_url,
        ] {
            *secret = secret
                .take()
                .filter(|v| !v.expose_secret().trim().is_empty());
        }
        Ok(config)
    }

    /// True when no database was configured: the laptop default, where demo data and generated
    /// secrets are acceptable.
    pub fn database_is_default(&self) -> bool {
        self.database_url.expose_secret() == DEFAULT_DATABASE_URL
    }

    pub fn demo_enabled(&self) -> bool {
        self.demo.unwrap_or_else(|| self.database_is_default())
    }

    /// The HTTP server's connection bounds.
    pub fn http_limits(&self) -> bourse_api::server::HttpLimits {
        bourse_api::server::HttpLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            max_connections: self.http_max_connections.max(1),
        }
    }

    /// The API's memory and time bounds.
    pub fn api_limits(&self) -> bourse_api::Limits {
        bourse_api::Limits {
            read_cache_ttl: Duration::from_millis(self.read_cache_ms),
            stock_cache_bytes: self.stock_cache_bytes,
            series_cache_bytes: self.series_cache_bytes,
            max_streams: self.http_max_streams,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
        }
    }

    /// The retention job's settings; days of 0 (or a row bound of 0) keep everything.
    pub fn retention(&self) -> bourse_feed::retention::RetentionConfig {
        let days = |d: u64| (d > 0).then(|| chrono::TimeDelta::days(d.min(1_000_000) as i64));
        bourse_feed::retention::RetentionConfig {
            ticks: days(self.tick_retention_days),
            dead_letters: days(self.dead_letter_retention_days),
            dead_letter_rows: match self.dead_letter_max_rows {
                0 => u64::MAX,
                n => n,
            },
            interval: std::time::Duration::from_secs(self.retention_interval_secs.max(1)),
            batch: self.retention_batch.max(1),
        }
    }

    pub fn tick_limits(&self) -> bourse_domain::TickLimits {
        bourse_domain::TickLimits {
            max_bytes: self.tick_max_bytes,
            max_skew: chrono::TimeDelta::seconds(
                self.tick_max_skew_secs.min(i64::MAX as u64 / 1000) as i64,
            ),
        }
    }

    pub fn mqtt_client_id(&self) -> String {
        self.mqtt_client_id
            .clone()
            .unwrap_or_else(|| format!("bourse-{}", bourse_orders::relay::host_name()))
    }
}

/// The configuration reference in docs/operations.md is generated from this file and checked.
#[cfg(test)]
#[path = "config_reference.rs"]
mod reference;
