//! `bourse serve`: the HTTP API plus the feed ingestor (from MQTT, or from an in-process
//! simulated market when no broker is configured).
//!
//! Shutdown order matters for "nothing is lost": stop accepting HTTP and stop taking feed
//! messages, let the ingestor commit and acknowledge what it holds, then close the MQTT session
//! and the database.

use super::quotes;
use super::{cancel_on_signal, connect, listen, redact, serve_http};
use crate::config::{Api, Auth, Config, Database, Quotas};
use crate::telemetry;
use anyhow::Context;
use bourse_api::identity::ClientAddrSource;
use bourse_api::jwt::JwtKeys;
use bourse_api::login::{Logins, ThrottleConfig};
use bourse_api::password::Hashing;
use bourse_api::quota::redis::RedisCounter;
use bourse_api::quota::{Quota, QuotaConfig, DAY};
use bourse_api::request_log::{RequestLog, RequestLogConfig, RequestLogWriter};
use bourse_api::{ApiContext, Gatekeeping, Readiness, Services};
use bourse_feed::ingest::{Ingestor, IngestorConfig};
use bourse_feed::mqtt::{self, MqttConfig, MqttUrl};
use bourse_feed::streamer::{self, StreamerConfig};
use bourse_store::users::{NewUser, Role};
use bourse_store::Store;
use secrecy::ExposeSecret;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";

pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    bourse_feed::metrics::describe();
    bourse_api::http_metrics::describe();
    bourse_orders::metrics::describe();
    bourse_api::quota::describe();
    bourse_api::request_log::describe();
    bourse_api::login::describe();

    let jwt = jwt_keys(&config.auth, &config.database)?;
    let (traffic, request_log_writer) = traffic(&config.api, &config.quotas)?;
    let logins = logins(&config.auth, &config.quotas, &traffic)?;
    let quote_client = quotes::client(&config.quotes, &config.amqp)?;
    let store = connect(&config.database).await?;
    if config.database.migrate {
        store.migrate().await.context("migrations failed")?;
    }
    info!(database = %redact(config.database.database_url.expose_secret()), engine = ?store.engine(), "database ready");
    let listener = listen(&config.http, DEFAULT_ADDR).await?;
    if config.database.demo_enabled() {
        let loopback = listener.local_addr()?.ip().is_loopback();
        seed_demo(&store, config.database.is_default() && loopback).await?;
    }
    let credential_changes = store
        .watch_credentials(Duration::from_millis(config.auth.credentials_check_ms))
        .await
        .context("cannot follow credential changes")?;

    let shutdown = CancellationToken::new();
    let (events, _) = broadcast::channel(4096);
    let readiness = Readiness::default();

    // Feed: source -> channel -> ingestor.
    let (tx, rx) = mpsc::channel(16_384);
    let ingestor = Ingestor::new(
        store.clone(),
        events.clone(),
        IngestorConfig {
            max_batch: config.feed.ingest_batch.max(1),
            limits: config.feed.tick_limits(),
            ..IngestorConfig::default()
        },
    );
    let ingestor_done = CancellationToken::new();
    let ingest_task = {
        let done = ingestor_done.clone();
        tokio::spawn(async move {
            ingestor.run(rx).await;
            done.cancel();
        })
    };
    let source_task = match &config.feed.mqtt_url {
        Some(url) => {
            let url: MqttUrl = url.parse()?;
            let mqtt_config = MqttConfig {
                url,
                topic: config.feed.mqtt_topic.clone(),
                client_id: config.feed.mqtt_client_id(),
                shared_group: config.feed.mqtt_shared_group.clone(),
                max_packet_bytes: config.feed.mqtt_max_packet_bytes,
            };
            tokio::spawn(mqtt::consume(
                mqtt_config,
                tx,
                readiness.feed.clone(),
                shutdown.clone(),
                ingestor_done.clone(),
            ))
        }
        None => {
            info!(
                rate = config.feed.feed_rate,
                stocks = config.feed.feed_stocks,
                "no MQTT broker configured: running the simulated in-process feed"
            );
            readiness.feed.store(true, Ordering::Release);
            tokio::spawn(streamer::run_embedded(
                StreamerConfig {
                    stocks: config.feed.feed_stocks.max(1),
                    rate: config.feed.feed_rate,
                    count: None,
                    part: 0,
                    parts: 1,
                },
                tx,
                shutdown.clone(),
            ))
        }
    };

    // Storage bounds: the role that ingests ticks also deletes the old ones.
    let retention_task = tokio::spawn(bourse_feed::retention::run(
        store.clone(),
        config.feed.retention(),
        shutdown.clone(),
    ));

    // Orders: the outbox relay in-process, unless relays run as their own role.
    let relay_tasks = if config.orders.relay == crate::config::RelayMode::Embedded {
        Some(super::relay::spawn(
            &config.orders,
            &config.amqp,
            &store,
            &shutdown,
        )?)
    } else {
        None
    };

    let ctx = ApiContext::new(
        store.clone(),
        events,
        readiness,
        Some(metrics),
        shutdown.clone(),
        config.api.limits(),
        Services {
            jwt,
            quotes: quote_client,
            gatekeeping: traffic,
            logins,
            paging: bourse_api::page::Paging::new(config.api.page_default, config.api.page_max)
                .map_err(anyhow::Error::msg)?,
        },
    );
    // A user's cached credentials are dropped when they change (`bourse user disable` …).
    bourse_api::revocation::forget_on_changes(
        ctx.credentials.clone(),
        credential_changes,
        shutdown.clone(),
    );
    // Cached time series of a symbol are dropped when one of its ticks commits here.
    bourse_api::series_cache::invalidate_on_ticks(
        ctx.series.clone(),
        ctx.events.subscribe(),
        shutdown.clone(),
    );
    info!(addr = %listener.local_addr()?, "bourse serve listening");
    cancel_on_signal(&shutdown);
    // The server gives each request its peer address, what anonymous callers are counted by
    // (unless a proxy header is set).
    let served = serve_http(&config.http, listener, bourse_api::app(ctx), &shutdown).await;
    shutdown.cancel();

    // Drain the feed: the source stops handing over messages, the ingestor commits and acks.
    if tokio::time::timeout(Duration::from_secs(30), async {
        let _ = source_task.await;
        let _ = ingest_task.await;
    })
    .await
    .is_err()
    {
        warn!("feed did not drain within 30 s; unacknowledged ticks will be redelivered");
    }
    let _ = retention_task.await;
    // The relay lets placements in flight finish (bounded); the rest are claimed again later.
    if let Some(mut tasks) = relay_tasks {
        while tasks.join_next().await.is_some() {}
    }
    // The request log writer ends once the last request's line is written.
    if let Some(writer) = request_log_writer {
        let finished = tokio::task::spawn_blocking(move || writer.finish());
        if tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .is_err()
        {
            warn!("the request log writer did not finish within 5 s");
        }
    }
    store.close().await;
    info!("bourse serve stopped");
    served
}

/// Quotas, the request log and the client address source, from the configuration; the request
/// log's writer is returned to be finished at shutdown.
fn traffic(
    config: &Api,
    quotas: &Quotas,
) -> anyhow::Result<(Gatekeeping, Option<RequestLogWriter>)> {
    let client_addr = match &config.trusted_proxy_header {
        Some(header) => ClientAddrSource::header(header).with_context(|| {
            format!("BOURSE_TRUSTED_PROXY_HEADER {header:?} is not a header name")
        })?,
        None => ClientAddrSource::socket(),
    };
    let quota = Quota::new(&QuotaConfig {
        anonymous: quotas.quota_anon_per_day,
        user: quotas.quota_user_per_day,
        window: DAY,
        redis_url: quotas
            .redis_url
            .as_ref()
            .map(|url| url.expose_secret().to_owned()),
        redis_prefix: quotas.quota_redis_prefix.clone(),
    })
    .context("invalid BOURSE_REDIS_URL")?;
    match &quota {
        Some(quota) => info!(
            anonymous = quotas.quota_anon_per_day,
            user = quotas.quota_user_per_day,
            counters = quota.backend_name(),
            redis = %quotas.redis_url.as_ref().map(|url| redact(url.expose_secret())).unwrap_or_default(),
            client_address = client_addr.trusted_header().map_or("socket", |h| h.as_str()),
            "quotas per rolling day (0 = unlimited)"
        ),
        None => {
            info!("quotas are off (BOURSE_QUOTA_ANON_PER_DAY and BOURSE_QUOTA_USER_PER_DAY are 0)")
        }
    }
    let (request_log, writer) = match config.request_log.trim() {
        "" => (None, None),
        path => {
            let (log, writer) = RequestLog::start(RequestLogConfig {
                max_bytes: config.request_log_max_bytes,
                keep: config.request_log_keep,
                ..RequestLogConfig::new(path)
            })
            .with_context(|| format!("cannot open the request log {path}"))?;
            info!(path, "request log");
            (Some(log), Some(writer))
        }
    };
    Ok((
        Gatekeeping {
            client_addr,
            quota,
            request_log,
        },
        writer,
    ))
}

/// The password checks: bounded hashing, and the throttle, whose counts live in Redis when one is
/// configured (on the quota's connection when quotas use it).
fn logins(config: &Auth, quotas: &Quotas, traffic: &Gatekeeping) -> anyhow::Result<Logins> {
    let redis = match (
        traffic.quota.as_ref().and_then(Quota::redis),
        &quotas.redis_url,
    ) {
        (Some(shared), _) => Some(shared.clone()),
        (None, Some(url)) => {
            Some(RedisCounter::connect(url.expose_secret()).context("invalid BOURSE_REDIS_URL")?)
        }
        (None, None) => None,
    };
    let throttle = ThrottleConfig {
        per_account_address: config.login_failures_per_account_address,
        per_address: config.login_failures_per_address,
        per_account: config.login_failures_per_account,
        window: Duration::from_secs(config.login_window_secs.max(1)),
        redis_prefix: config.login_redis_prefix.clone(),
    };
    info!(
        per_account_address = throttle.per_account_address,
        per_address = throttle.per_address,
        per_account = throttle.per_account,
        window_secs = throttle.window.as_secs(),
        counts = if redis.is_some() { "redis" } else { "memory" },
        "login throttle: failed password logins per window (0 = unlimited)"
    );
    let hashing = Hashing::new(
        config.hash_concurrency,
        Duration::from_millis(config.hash_wait_ms),
    );
    Ok(Logins::new(hashing, throttle, redis))
}

/// The JWT secret must be set outside the embedded default; there, a random one is generated
/// (tokens then do not survive a restart, which is fine on a laptop).
fn jwt_keys(config: &Auth, database: &Database) -> anyhow::Result<JwtKeys> {
    match &config.jwt_secret {
        Some(secret) => {
            let secret = secret.expose_secret();
            anyhow::ensure!(
                secret.len() >= 16,
                "BOURSE_JWT_SECRET must have at least 16 characters"
            );
            Ok(JwtKeys::new(secret.as_bytes()))
        }
        None if database.is_default() => {
            warn!("BOURSE_JWT_SECRET is not set: using a random secret for this run (embedded mode only)");
            let secret: [u8; 32] = rand::random();
            Ok(JwtKeys::new(&secret))
        }
        None => anyhow::bail!(
            "BOURSE_JWT_SECRET is required when a database is configured (it signs login tokens)"
        ),
    }
}

/// Demo data; and the demo users, with their well-known passwords, only for the embedded
/// default listening on loopback (`users`), in an empty users table. Beyond loopback there are
/// none: a printed random password would sit in the container's log, and `POST /register`
/// (an API key) or `bourse user create` serve instead.
async fn seed_demo(store: &Store, users: bool) -> anyhow::Result<()> {
    let bars = super::demo_bars::seed(store, chrono::Utc::now().date_naive()).await?;
    if bars > 0 {
        warn!(
            bars,
            "demo mode: seeded synthetic daily bars for CIB, Edita and Hamada Inc"
        );
    }
    if !users {
        warn!("demo mode: no demo users (the API listens beyond loopback, or a database is configured); create one with `bourse user create`");
        return Ok(());
    }
    if store.count_users().await? > 0 {
        return Ok(());
    }
    for (username, password, email, role) in [
        ("admin", "admin", "admin@mail.com", Role::Admin),
        ("johndoe", "john", "johndoe@mail.com", Role::User),
    ] {
        store
            .create_user(&NewUser {
                username: username.into(),
                email: Some(email.into()),
                first_name: None,
                last_name: None,
                password_hash: Some(bourse_api::password::hash(password)?),
                role,
            })
            .await?;
    }
    warn!(
        "demo mode: created users admin/admin (admin) and johndoe/john; do not use in production"
    );
    Ok(())
}
