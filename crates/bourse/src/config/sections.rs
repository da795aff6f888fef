//! The sections of the configuration. Each field is one setting: its doc comment is its help and
//! its line in docs/operations.md, `env` its variable, `default_value` its default.

use super::{expose, expose_option, from_str_serde, non_empty, secret};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The embedded default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://bourse.db";

/// The HTTP listener of every role with an endpoint.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "HTTP")]
pub struct Http {
    /// Address to listen on. Unset: 127.0.0.1 and the role's port (serve 8000, quote-service
    /// 8001, exchange 8002, relay 8003, streamer 8004).
    #[arg(long = "addr", env = "BOURSE_HTTP_ADDR", value_name = "ADDR")]
    #[serde(default, deserialize_with = "non_empty")]
    pub http_addr: Option<String>,
    /// HTTP: a request's head must arrive within this many seconds of the connection's opening
    /// or of the previous response (so idle keep-alive connections close after it too).
    #[arg(long, env = "BOURSE_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    pub http_header_timeout_secs: u64,
    /// HTTP: a connection on which no byte moves for this many seconds is closed (0: never);
    /// checked every quarter of it, so at most a quarter later.
    #[arg(long, env = "BOURSE_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// HTTP: connections served at once per process; beyond, 503 (health is still answered).
    #[arg(long, env = "BOURSE_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
}

impl Http {
    /// The HTTP server's connection bounds.
    pub fn limits(&self) -> bourse_api::server::HttpLimits {
        bourse_api::server::HttpLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            max_connections: self.http_max_connections.max(1),
        }
    }
}

/// The database: serve, relay, import, migrate and user.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Database")]
pub struct Database {
    /// `sqlite://path`, `sqlite:///abs/path` (created when missing) or `postgres://…`. May carry a
    /// password: a secret, logged only with the password masked (`roles::redact`).
    #[arg(long, env = "BOURSE_DATABASE_URL", value_name = "URL", value_parser = secret, default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    #[serde(serialize_with = "expose")]
    pub database_url: SecretString,
    /// Database connection pool size.
    #[arg(long, env = "BOURSE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// SQLite only: `full` syncs every commit (survives a power cut), `normal` only checkpoints.
    #[arg(long, env = "BOURSE_SQLITE_SYNCHRONOUS", value_parser = from_str_serde::<bourse_store::SqliteSync>, default_value = "full")]
    pub sqlite_synchronous: bourse_store::SqliteSync,
    /// Apply migrations at start.
    #[arg(long, env = "BOURSE_MIGRATE", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub migrate: bool,
    /// Seed demo data (users admin/admin and johndoe/john) into an empty database. Defaults to
    /// true only when no database URL was configured.
    #[arg(long, env = "BOURSE_DEMO", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub demo: Option<bool>,
}

impl Database {
    /// True when no database was configured: the laptop default, where demo data and generated
    /// secrets are acceptable.
    pub fn is_default(&self) -> bool {
        self.database_url.expose_secret() == DEFAULT_DATABASE_URL
    }

    pub fn demo_enabled(&self) -> bool {
        self.demo.unwrap_or_else(|| self.is_default())
    }
}

/// The market feed: MQTT (or the simulated feed), the ingestor's bounds and the retention job.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Feed")]
pub struct Feed {
    /// Unset: an in-process simulated market feeds the ingestor.
    #[arg(long, env = "BOURSE_MQTT_URL", value_name = "URL")]
    #[serde(default, deserialize_with = "non_empty")]
    pub mqtt_url: Option<String>,
    /// MQTT topic of the feed.
    #[arg(
        long,
        env = "BOURSE_MQTT_TOPIC",
        value_name = "TOPIC",
        default_value = "thndr-trading"
    )]
    pub mqtt_topic: String,
    /// Stable id of the persistent MQTT session; defaults to `bourse-<hostname>`.
    #[arg(long, env = "BOURSE_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Shared-subscription group, so that API replicas split the feed.
    #[arg(long, env = "BOURSE_MQTT_SHARED_GROUP")]
    #[serde(default, deserialize_with = "non_empty")]
    pub mqtt_shared_group: Option<String>,
    /// Simulated ticks per second (embedded feed).
    #[arg(long, env = "BOURSE_FEED_RATE", default_value_t = 5.0)]
    pub feed_rate: f64,
    /// Stocks of the simulated feed (embedded).
    #[arg(long, env = "BOURSE_FEED_STOCKS", default_value_t = 3)]
    pub feed_stocks: usize,
    /// Largest batch of ticks committed in one transaction.
    #[arg(long, env = "BOURSE_INGEST_BATCH", default_value_t = 2000)]
    pub ingest_batch: usize,
    /// Largest MQTT packet read; must cover the broker's `message_size_limit` plus the topic.
    #[arg(long, env = "BOURSE_MQTT_MAX_PACKET_BYTES", default_value_t = 1024 * 1024 + 64 * 1024)]
    pub mqtt_max_packet_bytes: usize,
    /// Feed messages over this size are dead letters (a tick is ~150 bytes).
    #[arg(long, env = "BOURSE_TICK_MAX_BYTES", default_value_t = 4096)]
    pub tick_max_bytes: usize,
    /// How far past its receive time a tick's timestamp may be (seconds); earlier than 1970 or
    /// later is a dead letter.
    #[arg(long, env = "BOURSE_TICK_MAX_SKEW_SECS", default_value_t = 300)]
    pub tick_max_skew_secs: u64,
    /// Ticks older than this are deleted (their minute bars stay); 0 keeps them forever.
    #[arg(long, env = "BOURSE_TICK_RETENTION_DAYS", default_value_t = 30)]
    pub tick_retention_days: u64,
    /// Dead letters older than this are deleted; 0 keeps them forever.
    #[arg(long, env = "BOURSE_DEAD_LETTER_RETENTION_DAYS", default_value_t = 30)]
    pub dead_letter_retention_days: u64,
    /// At most this many dead letters are kept (the newest); 0 for no bound.
    #[arg(long, env = "BOURSE_DEAD_LETTER_MAX_ROWS", default_value_t = 100_000)]
    pub dead_letter_max_rows: u64,
    /// Period of the retention job (seconds); it also runs at start.
    #[arg(long, env = "BOURSE_RETENTION_INTERVAL_SECS", default_value_t = 60)]
    pub retention_interval_secs: u64,
    /// Rows per delete statement of the retention job.
    #[arg(long, env = "BOURSE_RETENTION_BATCH", default_value_t = 1000)]
    pub retention_batch: u32,
}

impl Feed {
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
            interval: Duration::from_secs(self.retention_interval_secs.max(1)),
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

/// RabbitMQ, which carries the quote RPC and the order events.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "RabbitMQ")]
pub struct Amqp {
    /// RabbitMQ (`amqp://user:pw@host:5672/%2f`): quote RPC and order events.
    #[arg(long, env = "BOURSE_AMQP_URL", value_name = "URL", value_parser = secret, hide_env_values = true)]
    #[serde(
        serialize_with = "expose_option",
        default,
        deserialize_with = "non_empty"
    )]
    pub amqp_url: Option<SecretString>,
}

/// Quotes: where the API asks for them, and the quote service's providers and bounds.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Quotes")]
pub struct Quotes {
    /// The quote service over HTTP, used when no AMQP URL is set.
    #[arg(long, env = "BOURSE_QUOTE_SERVICE_URL", value_name = "URL")]
    #[serde(default, deserialize_with = "non_empty")]
    pub quote_service_url: Option<String>,
    /// RabbitMQ queue of quote requests.
    #[arg(long, env = "BOURSE_QUOTE_QUEUE", default_value = "bourse.quotes")]
    pub quote_queue: String,
    /// The stooq quote provider.
    #[arg(
        long,
        env = "BOURSE_STOOQ_URL",
        value_name = "URL",
        default_value = "https://stooq.com"
    )]
    pub stooq_url: String,
    /// The AlphaVantage provider (`GET /symbol/{symbol}`).
    #[arg(
        long,
        env = "BOURSE_ALPHAVANTAGE_URL",
        value_name = "URL",
        default_value = "https://www.alphavantage.co"
    )]
    pub alphavantage_url: String,
    /// AlphaVantage API key.
    #[arg(long, env = "BOURSE_ALPHAVANTAGE_KEY", value_name = "KEY", value_parser = secret, hide_env_values = true)]
    #[serde(
        serialize_with = "expose_option",
        default,
        deserialize_with = "non_empty"
    )]
    pub alphavantage_key: Option<SecretString>,
    /// How long a successful quote is reused (seconds; 0 disables the cache).
    #[arg(long, env = "BOURSE_QUOTE_CACHE_SECS", default_value_t = 60)]
    pub quote_cache_secs: u64,
    /// Memory of the quote service's cached answers, per provider, in bytes.
    #[arg(long, env = "BOURSE_QUOTE_CACHE_BYTES", default_value_t = 8 << 20)]
    pub quote_cache_bytes: u64,
    /// Quote requests in one RabbitMQ message: the most the API's client sends, and the most
    /// the quote service answers (a larger or unknown message is refused, no upstream call).
    #[arg(long, env = "BOURSE_QUOTE_MAX_BATCH", default_value_t = 32)]
    pub quote_max_batch: usize,
}

/// Orders: the outbox relay and the exchange it places at (also the simulated exchange's role).
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Orders")]
pub struct Orders {
    /// Orders: `embedded` runs the outbox relay inside `serve`; `off` when relays run as their
    /// own role (`bourse relay`).
    #[arg(long, env = "BOURSE_RELAY", value_enum, default_value_t = RelayMode::Embedded)]
    pub relay: RelayMode,
    /// The exchange over HTTP (`bourse exchange`); unset: the simulated exchange in-process.
    #[arg(long, env = "BOURSE_EXCHANGE_URL", value_name = "URL")]
    #[serde(default, deserialize_with = "non_empty")]
    pub exchange_url: Option<String>,
    /// Simulated exchange: share of first submissions that fail.
    #[arg(long, env = "BOURSE_EXCHANGE_FAILURE_RATE", default_value_t = 0.1)]
    pub exchange_failure_rate: f64,
    /// Simulated exchange: time to place an order.
    #[arg(long, env = "BOURSE_EXCHANGE_LATENCY_MS", default_value_t = 500)]
    pub exchange_latency_ms: u64,
    /// Longest wait for the exchange's answer to one placement.
    #[arg(long, env = "BOURSE_EXCHANGE_TIMEOUT_MS", default_value_t = 10_000)]
    pub exchange_timeout_ms: u64,
    /// Placement attempts before an order is `failed`.
    #[arg(long, env = "BOURSE_ORDER_MAX_ATTEMPTS", default_value_t = 20)]
    pub order_max_attempts: u32,
    /// Placements in flight per relay.
    #[arg(long, env = "BOURSE_RELAY_CONCURRENCY", default_value_t = 1024)]
    pub relay_concurrency: usize,
    /// How long a relay's claim on an order lasts; must exceed `exchange_timeout_ms`.
    #[arg(long, env = "BOURSE_RELAY_LEASE_MS", default_value_t = 30_000)]
    pub relay_lease_ms: u64,
    /// Backoff between placement attempts: ceiling of the first delay (doubles each attempt,
    /// with jitter).
    #[arg(long, env = "BOURSE_ORDER_RETRY_BASE_MS", default_value_t = 200)]
    pub order_retry_base_ms: u64,
    /// Backoff between placement attempts: largest delay.
    #[arg(long, env = "BOURSE_ORDER_RETRY_MAX_MS", default_value_t = 60_000)]
    pub order_retry_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    Embedded,
    Off,
}

/// Request quotas per rolling day, counted in Redis or in memory.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Quotas")]
pub struct Quotas {
    /// Redis (`redis://host:6379`): quota counters shared by all API replicas. Unset: each
    /// process counts in its own memory. Also shares the login throttle's counts.
    #[arg(long, env = "BOURSE_REDIS_URL", value_name = "URL", value_parser = secret, hide_env_values = true)]
    #[serde(
        serialize_with = "expose_option",
        default,
        deserialize_with = "non_empty"
    )]
    pub redis_url: Option<SecretString>,
    /// Requests per rolling day per client address, for callers without valid credentials;
    /// 0 = unlimited.
    #[arg(
        long,
        env = "BOURSE_QUOTA_ANON_PER_DAY",
        value_name = "N",
        default_value_t = 100
    )]
    pub quota_anon_per_day: u64,
    /// Requests per rolling day per user; 0 = unlimited.
    #[arg(
        long,
        env = "BOURSE_QUOTA_USER_PER_DAY",
        value_name = "N",
        default_value_t = 1000
    )]
    pub quota_user_per_day: u64,
    /// Prefix of the quota keys in Redis.
    #[arg(
        long,
        env = "BOURSE_QUOTA_REDIS_PREFIX",
        value_name = "PREFIX",
        default_value = "bourse:quota:"
    )]
    pub quota_redis_prefix: String,
}

/// The API's own bounds, its caches and its request log (`serve` only).
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "API")]
pub struct Api {
    /// How long hot reads may be served from memory (milliseconds).
    #[arg(long, env = "BOURSE_READ_CACHE_MS", default_value_t = 50)]
    pub read_cache_ms: u64,
    /// Event streams (`GET /stocks/stream`) open at once per process; beyond, 503.
    #[arg(long, env = "BOURSE_HTTP_MAX_STREAMS", default_value_t = 1000)]
    pub http_max_streams: usize,
    /// A request still running after this many seconds is answered with a timeout.
    #[arg(long, env = "BOURSE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Memory of the cached stocks (`GET /stocks/{id}`), in bytes.
    #[arg(long, env = "BOURSE_STOCK_CACHE_BYTES", default_value_t = 16 << 20)]
    pub stock_cache_bytes: u64,
    /// Memory of the cached time-series and indicator answers, in bytes.
    #[arg(long, env = "BOURSE_SERIES_CACHE_BYTES", default_value_t = 64 << 20)]
    pub series_cache_bytes: u64,
    /// Rows per page of the time series and `GET /stocks` when `limit` is not given.
    #[arg(long, env = "BOURSE_PAGE_DEFAULT", default_value_t = 5_000)]
    pub page_default: u32,
    /// Largest `limit` those accept; above it a 400.
    #[arg(long, env = "BOURSE_PAGE_MAX", default_value_t = 10_000)]
    pub page_max: u32,
    /// Header in which a trusted reverse proxy passes the client address (`X-Forwarded-For`,
    /// `X-Real-IP`, `Forwarded`); its last entry is used. Unset: the socket's peer address.
    #[arg(long, env = "BOURSE_TRUSTED_PROXY_HEADER", value_name = "HEADER")]
    #[serde(default, deserialize_with = "non_empty")]
    pub trusted_proxy_header: Option<String>,
    /// The request log file; empty: off.
    #[arg(
        long,
        env = "BOURSE_REQUEST_LOG",
        value_name = "FILE",
        default_value = "apicalls.log"
    )]
    pub request_log: String,
    /// Rotate the request log before it exceeds this many bytes (0: never).
    #[arg(long, env = "BOURSE_REQUEST_LOG_MAX_BYTES", value_name = "BYTES", default_value_t = 10 * 1024 * 1024)]
    pub request_log_max_bytes: u64,
    /// Rotated request logs kept (`.1` … `.N`).
    #[arg(
        long,
        env = "BOURSE_REQUEST_LOG_KEEP",
        value_name = "N",
        default_value_t = 5
    )]
    pub request_log_keep: usize,
}

impl Api {
    /// The API's memory and time bounds.
    pub fn limits(&self) -> bourse_api::Limits {
        bourse_api::Limits {
            read_cache_ttl: Duration::from_millis(self.read_cache_ms),
            stock_cache_bytes: self.stock_cache_bytes,
            series_cache_bytes: self.series_cache_bytes,
            max_streams: self.http_max_streams,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
        }
    }
}

/// Credentials: login tokens, password hashing and the login throttle (`serve` only).
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Authentication")]
pub struct Auth {
    /// HS256 secret for JWTs; required unless running on embedded defaults.
    #[arg(long, env = "BOURSE_JWT_SECRET", value_name = "SECRET", value_parser = secret, hide_env_values = true)]
    #[serde(
        serialize_with = "expose_option",
        default,
        deserialize_with = "non_empty"
    )]
    pub jwt_secret: Option<SecretString>,
    /// How often each API replica looks for credential changes it was not notified of
    /// (milliseconds): the longest a disabled user, an old password or a revoked key still works.
    #[arg(long, env = "BOURSE_CREDENTIALS_CHECK_MS", default_value_t = 1000)]
    pub credentials_check_ms: u64,
    /// Password hashes computed at once (each takes argon2's 19 MiB); 0: one per core.
    #[arg(long, env = "BOURSE_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,
    /// How long a password check waits for a hashing slot before it is answered 503.
    #[arg(long, env = "BOURSE_HASH_WAIT_MS", default_value_t = 1000)]
    pub hash_wait_ms: u64,
    /// Failed password logins (Basic, `/login`) per window for one account from one address
    /// (0: no limit).
    #[arg(
        long,
        env = "BOURSE_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS",
        default_value_t = 10
    )]
    pub login_failures_per_account_address: u64,
    /// Failed password logins per window from one address, whatever the account (0: no limit).
    #[arg(long, env = "BOURSE_LOGIN_FAILURES_PER_ADDRESS", default_value_t = 100)]
    pub login_failures_per_address: u64,
    /// Failed password logins per window for one account, whatever the address (0: no limit,
    /// the default: it would let anyone lock an account's password logins).
    #[arg(long, env = "BOURSE_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 0)]
    pub login_failures_per_account: u64,
    /// The login throttle's window, from a count's first failure (seconds).
    #[arg(long, env = "BOURSE_LOGIN_WINDOW_SECS", default_value_t = 15 * 60)]
    pub login_window_secs: u64,
    /// Prefix of the login throttle's keys in Redis.
    #[arg(
        long,
        env = "BOURSE_LOGIN_REDIS_PREFIX",
        default_value = "bourse:login:"
    )]
    pub login_redis_prefix: String,
}

/// Logging, of every role.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[command(next_help_heading = "Logging")]
pub struct Log {
    /// Tracing filter (`info`, `bourse_feed=debug,info`, …).
    #[arg(
        long,
        env = "BOURSE_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log: String,
    /// `text`, or `json` for structured logs.
    #[arg(long, env = "BOURSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
