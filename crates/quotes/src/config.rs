//! Settings of the quote service core. The binary fills these from `BOURSE_*` (see
//! docs/operations.md); defaults here are the documented defaults so tests and embedded mode need
//! nothing.

use secrecy::SecretString;
use std::time::Duration;

/// The request queue by contract.
pub(crate) const DEFAULT_QUEUE: &str = "bourse.quotes";

/// Providers, cache and upstream timeouts.
#[derive(Debug, Clone)]
pub struct QuoteConfig {
    /// `BOURSE_STOOQ_URL`, without trailing slash needed.
    pub stooq_url: String,
    /// `BOURSE_ALPHAVANTAGE_URL`.
    pub alphavantage_url: String,
    /// `BOURSE_ALPHAVANTAGE_KEY`; AlphaVantage's public `demo` key when unset (it answers IBM only).
    pub alphavantage_key: SecretString,
    /// `BOURSE_QUOTE_CACHE_SECS`: how long a successful answer is reused. Zero disables the cache
    /// (concurrent requests for one symbol still share one upstream call).
    pub cache_ttl: Duration,
    /// `BOURSE_QUOTE_CACHE_BYTES`: memory the cached answers of each provider may take (their
    /// JSON size), so a scan of random symbols cannot grow memory without limit.
    pub cache_max_bytes: u64,
    /// TCP connect timeout towards a provider.
    pub connect_timeout: Duration,
    /// Whole-request timeout towards a provider. Kept under the 5 s RPC client timeout so that
    /// callers see the provider's `timeout` rather than their own.
    pub request_timeout: Duration,
}

impl Default for QuoteConfig {
    fn default() -> Self {
        Self {
            stooq_url: "https://stooq.com".into(),
            alphavantage_url: "https://www.alphavantage.co".into(),
            alphavantage_key: "demo".into(),
            cache_ttl: Duration::from_secs(60),
            cache_max_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(4),
        }
    }
}

/// RabbitMQ RPC settings, shared by the server and the client side.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `BOURSE_AMQP_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (a secret: its password).
    pub url: SecretString,
    /// Request queue; `bourse.quotes` by contract, other names let tests run side by side.
    pub queue: String,
    /// Server: unacknowledged requests in flight per consumer (they are handled concurrently).
    pub prefetch: u16,
    /// Client: how long a call may take, connecting included; also the request's TTL in the
    /// queue, so a request nobody picked up in time is dropped by the broker, not served late.
    pub timeout: Duration,
    /// Declares the queue with `x-expires`, so RabbitMQ deletes it once unused that long. For
    /// tests and throw-away queues; leave `None` for `bourse.quotes` (all declarations of a queue
    /// must agree on its arguments).
    pub queue_expires: Option<Duration>,
    /// Client: requests carried by one message at most (1 = one message per request). Server:
    /// a message carrying more, or more than 256 bytes per request, is refused whole.
    pub max_batch: usize,
    /// Client: messages awaiting their replies at once; while all are out, calls queue up and
    /// leave together in the next message.
    pub batches_in_flight: usize,
    /// Server: first delay before reconnecting to the broker; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl AmqpConfig {
    /// The contract's defaults for the given broker URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            queue: DEFAULT_QUEUE.into(),
            queue_expires: None,
            prefetch: 64,
            timeout: Duration::from_secs(5),
            max_batch: 32,
            batches_in_flight: 4,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
        }
    }

    /// Same settings on another queue.
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
}
