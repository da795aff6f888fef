//! `bourse`: one binary, several roles. `bourse --help` lists them; every role reads the same
//! configuration (defaults < bourse.toml < BOURSE_* env < flags).
//!
//! `serve` (the default: the HTTP API and feed ingestor, with the relay and the quote service in
//! process unless configured otherwise), `quote-service`, `relay`, `exchange`, `streamer`,
//! `import`, `migrate`, `user`. Each role is a module of `roles`; `config` is the one definition
//! of the settings (docs/operations.md is generated from it). For example:
//!
//! ```text
//! bourse                                   # everything in one process on embedded defaults
//! BOURSE_DATABASE_URL=postgres://postgres@127.0.0.1/bourse BOURSE_JWT_SECRET=change-me-0123456789 \
//!   BOURSE_MQTT_URL=mqtt://127.0.0.1:1883 BOURSE_RELAY=off bourse serve
//! bourse relay &  bourse import prices.csv  bourse user create --username alice --password s3cret
//! ```

mod config;
mod roles;
mod telemetry;

use clap::{Args, Parser, Subcommand};
use config::Config;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// mimalloc rather than the system allocator: a request allocates and frees many small buffers
/// across threads (hyper, serde, sqlx, lapin), which glibc's malloc serves with more contention
/// and fragmentation (docs/decisions/0004-mimalloc.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bourse",
    version,
    about = "Stock-market backend: live feed, analyst targets, quotes, orders, time series.",
    long_about = "Stock-market backend: live feed, analyst targets, quotes, orders, time series.\n\n\
        With no configuration, `bourse` runs everything in one process on embedded defaults: a \
        SQLite file (bourse.db), an in-process simulated market feed, demo users admin/admin and \
        johndoe/john, and the API on http://127.0.0.1:8000.\n\n\
        Configuration comes from defaults, then bourse.toml (or --config), then BOURSE_* \
        environment variables (e.g. BOURSE_DATABASE_URL, BOURSE_MQTT_URL), then flags."
)]
struct Cli {
    /// Configuration file (TOML; keys as in BOURSE_* without the prefix, lower case).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the feed ingestor (the default).
    Serve(ServeArgs),
    /// Run the internal quote service (stooq, AlphaVantage) over RabbitMQ RPC and HTTP.
    QuoteService(QuoteServiceArgs),
    /// Run the outbox relay: place stored orders at the exchange, retry, record events.
    Relay(RelayArgs),
    /// Run the simulated exchange over HTTP (no database; ledger in memory).
    Exchange(ExchangeArgs),
    /// Publish realistic simulated ticks to MQTT (random walk), for demos and load.
    Streamer(StreamerArgs),
    /// Load OHLCV bars from CSV files (header symbol,date,open,high,low,close,volume).
    Import(ImportArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

/// Flags shared by the roles that use the database. Each overrides its BOURSE_* variable.
#[derive(Args, Serialize, Default, Clone)]
struct DbArgs {
    /// Database URL: sqlite://path or postgres://user@host/db [env: BOURSE_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
}

#[derive(Args, Serialize, Default, Clone)]
struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    db: DbArgs,
    /// Address to listen on [env: BOURSE_HTTP_ADDR] [default: 127.0.0.1:8000]
    #[arg(long = "addr", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// MQTT broker (mqtt://host:port); unset runs a simulated in-process feed [env: BOURSE_MQTT_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_url: Option<String>,
    /// MQTT topic of the feed [env: BOURSE_MQTT_TOPIC] [default: thndr-trading]
    #[arg(long, value_name = "TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_topic: Option<String>,
    /// Redis for quota counters shared by all replicas; unset counts in memory, per process [env: BOURSE_REDIS_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    /// Requests per rolling day per client address without valid credentials; 0 = unlimited [env: BOURSE_QUOTA_ANON_PER_DAY] [default: 100]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_anon_per_day: Option<u64>,
    /// Requests per rolling day per user; 0 = unlimited [env: BOURSE_QUOTA_USER_PER_DAY] [default: 1000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_user_per_day: Option<u64>,
    /// Prefix of the quota keys in Redis [env: BOURSE_QUOTA_REDIS_PREFIX] [default: bourse:quota:]
    #[arg(long, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_redis_prefix: Option<String>,
    /// Header in which a trusted reverse proxy passes the client address (e.g. X-Forwarded-For; its last entry counts); unset uses the socket's address [env: BOURSE_TRUSTED_PROXY_HEADER]
    #[arg(long, value_name = "HEADER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_proxy_header: Option<String>,
    /// Request log file, one line per API request, rotated by size; empty turns it off [env: BOURSE_REQUEST_LOG] [default: apicalls.log]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_log: Option<String>,
    /// Rotate the request log before it exceeds this many bytes; 0 = never [env: BOURSE_REQUEST_LOG_MAX_BYTES] [default: 10485760]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_log_max_bytes: Option<u64>,
    /// Rotated request logs kept (FILE.1 … FILE.N) [env: BOURSE_REQUEST_LOG_KEEP] [default: 5]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_log_keep: Option<usize>,
}

#[derive(Args, Serialize, Default, Clone)]
struct RelayArgs {
    #[command(flatten)]
    #[serde(flatten)]
    db: DbArgs,
    /// Address of the health and metrics endpoint [env: BOURSE_HTTP_ADDR] [default: 127.0.0.1:8003]
    #[arg(long = "addr", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// The exchange over HTTP; unset places at the in-process simulation [env: BOURSE_EXCHANGE_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_url: Option<String>,
}

#[derive(Args, Serialize, Default, Clone)]
struct ExchangeArgs {
    /// Address to listen on [env: BOURSE_HTTP_ADDR] [default: 127.0.0.1:8002]
    #[arg(long = "addr", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
}

#[derive(Args, Serialize, Default, Clone)]
struct QuoteServiceArgs {
    /// Address of the HTTP endpoint [env: BOURSE_HTTP_ADDR] [default: 127.0.0.1:8001]
    #[arg(long = "addr", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// RabbitMQ URL; serves the quote queue when set [env: BOURSE_AMQP_URL]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    amqp_url: Option<String>,
}

#[derive(Args, Serialize, Default, Clone)]
struct StreamerArgs {
    /// MQTT broker to publish to [env: BOURSE_MQTT_URL] [default: mqtt://127.0.0.1:1883]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_url: Option<String>,
    /// Topic to publish on [env: BOURSE_MQTT_TOPIC] [default: thndr-trading]
    #[arg(long, value_name = "TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_topic: Option<String>,
    /// Address of the health and metrics endpoint [env: BOURSE_HTTP_ADDR] [default: 127.0.0.1:8004]
    #[arg(long = "addr", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// Number of stocks: CIB, Edita, Hamada Inc, then STK004, STK005, ...
    #[arg(long, default_value_t = 3)]
    #[serde(skip)]
    stocks: usize,
    /// Ticks per second over all stocks.
    #[arg(long, default_value_t = 5.0)]
    #[serde(skip)]
    rate: f64,
    /// Stop after publishing this many ticks (default: run until stopped).
    #[arg(long)]
    #[serde(skip)]
    count: Option<u64>,
    /// Parallel MQTT connections (for load generation); the rate is split between them.
    #[arg(long, default_value_t = 1)]
    #[serde(skip)]
    connections: usize,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    db: DbArgs,
    /// What to do with a row that does not parse: stop (rows before it stay imported) or skip it
    #[arg(long, value_enum, default_value = "stop")]
    on_error: roles::import::OnError,
    /// Rows per transaction
    // On PostgreSQL each batch is one COPY, and larger batches import faster; memory stays at a
    // few batches (docs/decisions/0003-bar-import-upsert.md).
    #[arg(long, default_value_t = 50_000)]
    batch_size: usize,
    /// Concurrent writers on PostgreSQL (rows are split among them by symbol and date)
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// CSV files: symbol,date,open,high,low,close,volume (BOM and CRLF tolerated; upsert by symbol and date)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (or an admin with --admin).
    Create(UserCreateArgs),
    /// Issue a new API key for a user and print it (shown once; use it as `Authorization: Token <key>`).
    Token(UserArgs),
    /// Refuse every credential of a user (password, API keys, login tokens) on every replica.
    Disable(UserArgs),
    /// Accept a disabled user's password and API keys again (their old login tokens stay ended).
    Enable(UserArgs),
    /// Set a user's password (asked on a terminal, else read from stdin's first line, or
    /// --password); the old password and the user's login tokens stop working.
    Password(UserPasswordArgs),
    /// Revoke every API key of a user.
    RevokeKeys(UserArgs),
}

#[derive(Args)]
struct UserPasswordArgs {
    #[command(flatten)]
    user: UserArgs,
    /// The new password (visible to other local users in the process list: prefer stdin).
    #[arg(long)]
    password: Option<String>,
}

#[derive(Args)]
struct UserArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The user (for users from POST /register: their email).
    #[arg(long)]
    username: String,
}

#[derive(Args)]
struct UserCreateArgs {
    #[command(flatten)]
    db: DbArgs,
    #[arg(long)]
    username: String,
    #[arg(long)]
    password: String,
    #[arg(long)]
    email: Option<String>,
    /// Give the user the admin role.
    #[arg(long)]
    admin: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bourse: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bourse stopped with an error");
            eprintln!("bourse: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every role starts the same way: layered configuration, then logging as it says.
fn configure(file: Option<&Path>, flags: &impl Serialize) -> anyhow::Result<Config> {
    let config = Config::load(file, flags)?;
    telemetry::init_logging(&config);
    Ok(config)
}

async fn user_change(
    file: Option<&Path>,
    args: &UserArgs,
    what: roles::user::Lifecycle,
) -> anyhow::Result<()> {
    let config = configure(file, &args.db)?;
    roles::user::change(&config, &args.username, what).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            let config = configure(file, &args)?;
            roles::serve::run(config).await
        }
        Command::QuoteService(args) => {
            let config = configure(file, &args)?;
            roles::quote_service::run(config).await
        }
        Command::Relay(args) => {
            let config = configure(file, &args)?;
            roles::relay::run(config).await
        }
        Command::Exchange(args) => {
            let config = configure(file, &args)?;
            roles::exchange::run(config).await
        }
        Command::Streamer(args) => {
            let config = configure(file, &args)?;
            roles::streamer::run(
                config,
                roles::streamer::Options {
                    stocks: args.stocks,
                    rate: args.rate,
                    count: args.count,
                    connections: args.connections,
                },
            )
            .await
        }
        Command::Import(args) => {
            let config = configure(file, &args.db)?;
            roles::import::run(
                &config,
                roles::import::Options {
                    files: args.files,
                    on_error: args.on_error,
                    batch_size: args.batch_size,
                    writers: args.writers,
                },
            )
            .await
        }
        Command::Migrate(args) => {
            let config = configure(file, &args)?;
            let store = roles::connect(&config).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::User(UserCommand::Create(args)) => {
            let config = configure(file, &args.db)?;
            roles::user::create(
                &config,
                &args.username,
                &args.password,
                args.email,
                args.admin,
            )
            .await
        }
        Command::User(UserCommand::Token(args)) => {
            let config = configure(file, &args.db)?;
            roles::user::token(&config, &args.username).await
        }
        Command::User(UserCommand::Disable(args)) => {
            user_change(file, &args, roles::user::Lifecycle::Disable).await
        }
        Command::User(UserCommand::Enable(args)) => {
            user_change(file, &args, roles::user::Lifecycle::Enable).await
        }
        Command::User(UserCommand::Password(args)) => {
            let what = roles::user::Lifecycle::Password(args.password);
            user_change(file, &args.user, what).await
        }
        Command::User(UserCommand::RevokeKeys(args)) => {
            user_change(file, &args, roles::user::Lifecycle::RevokeKeys).await
        }
    }
}
