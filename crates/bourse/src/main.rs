//! `bourse`: one binary, several roles. `bourse --help` lists them; each role reads the sections
//! of the configuration it uses (defaults < bourse.toml < BOURSE_* env < flags).
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

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use config::{Amqp, Config, Database, Feed, Http, Orders, Quotes, RoleConfig};
use std::ffi::OsString;
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

// Built once per run, so the size of `Serve` against the other roles does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the feed ingestor (the default).
    Serve(Config),
    /// Run the internal quote service (stooq, AlphaVantage) over RabbitMQ RPC and HTTP.
    QuoteService(QuoteServiceConfig),
    /// Run the outbox relay: place stored orders at the exchange, retry, record events.
    Relay(RelayConfig),
    /// Run the simulated exchange over HTTP (no database; ledger in memory).
    Exchange(ExchangeConfig),
    /// Publish realistic simulated ticks to MQTT (random walk), for demos and load.
    Streamer(StreamerArgs),
    /// Load OHLCV bars from CSV files (header symbol,date,open,high,low,close,volume).
    Import(ImportArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseConfig),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

role_config! {
    struct QuoteServiceConfig { http: Http, quotes: Quotes, amqp: Amqp }
}
role_config! {
    struct RelayConfig { http: Http, database: Database, orders: Orders, amqp: Amqp }
}
role_config! {
    struct ExchangeConfig { http: Http, orders: Orders }
}
role_config! {
    struct StreamerConfig { http: Http, feed: Feed }
}
role_config! {
    struct DatabaseConfig { database: Database }
}

// The role's own flags come before its sections, so that `--help` lists them under "Options".
#[derive(Args)]
struct StreamerArgs {
    #[command(flatten)]
    options: roles::streamer::Options,
    #[command(flatten)]
    config: StreamerConfig,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    options: roles::import::Options,
    #[command(flatten)]
    db: DatabaseConfig,
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
    /// The new password (visible to other local users in the process list: prefer stdin).
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    user: UserArgs,
}

#[derive(Args)]
struct UserArgs {
    /// The user (for users from POST /register: their email).
    #[arg(long)]
    username: String,
    #[command(flatten)]
    db: DatabaseConfig,
}

#[derive(Args)]
struct UserCreateArgs {
    #[arg(long)]
    username: String,
    #[arg(long)]
    password: String,
    #[arg(long)]
    email: Option<String>,
    /// Give the user the admin role.
    #[arg(long)]
    admin: bool,
    #[command(flatten)]
    db: DatabaseConfig,
}

fn main() -> std::process::ExitCode {
    let (cli, matches) = parse();
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
    match runtime.block_on(run(cli, leaf(&matches))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bourse stopped with an error");
            eprintln!("bourse: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line, with `serve` when no role is named (so that its flags and variables are
/// read as for `bourse serve`).
fn parse() -> (Cli, ArgMatches) {
    let mut matches = Cli::command().get_matches();
    if matches.subcommand().is_none() {
        let args = std::env::args_os().chain([OsString::from("serve")]);
        matches = Cli::command().get_matches_from(args);
    }
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

/// The matches of the role's own (innermost) subcommand, where its flags are.
fn leaf(mut matches: &ArgMatches) -> &ArgMatches {
    while let Some((_, sub)) = matches.subcommand() {
        matches = sub;
    }
    matches
}

/// Every role starts the same way: layered configuration, then logging as it says.
fn configure<T: RoleConfig>(file: Option<&Path>, m: &ArgMatches, parsed: T) -> anyhow::Result<T> {
    let config = config::load(parsed, m, file)?;
    telemetry::init_logging(config.log());
    Ok(config)
}

async fn user_change(
    file: Option<&Path>,
    m: &ArgMatches,
    args: UserArgs,
    what: roles::user::Lifecycle,
) -> anyhow::Result<()> {
    let config = configure(file, m, args.db)?;
    roles::user::change(&config.database, &args.username, what).await
}

async fn run(cli: Cli, m: &ArgMatches) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    let command = cli.command.expect("parse() names a role");
    match command {
        Command::Serve(config) => roles::serve::run(configure(file, m, config)?).await,
        Command::QuoteService(config) => {
            let c = configure(file, m, config)?;
            roles::quote_service::run(&c.http, &c.quotes, &c.amqp).await
        }
        Command::Relay(config) => {
            let c = configure(file, m, config)?;
            roles::relay::run(&c.http, &c.database, &c.orders, &c.amqp).await
        }
        Command::Exchange(config) => {
            let c = configure(file, m, config)?;
            roles::exchange::run(&c.http, &c.orders).await
        }
        Command::Streamer(args) => {
            let c = configure(file, m, args.config)?;
            roles::streamer::run(&c.http, &c.feed, args.options).await
        }
        Command::Import(args) => {
            let c = configure(file, m, args.db)?;
            roles::import::run(&c.database, args.options).await
        }
        Command::Migrate(config) => {
            let c = configure(file, m, config)?;
            let store = roles::connect(&c.database).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::User(UserCommand::Create(args)) => {
            let c = configure(file, m, args.db)?;
            let (name, password) = (&args.username, &args.password);
            roles::user::create(&c.database, name, password, args.email, args.admin).await
        }
        Command::User(UserCommand::Token(args)) => {
            let c = configure(file, m, args.db)?;
            roles::user::token(&c.database, &args.username).await
        }
        Command::User(UserCommand::Disable(args)) => {
            user_change(file, m, args, roles::user::Lifecycle::Disable).await
        }
        Command::User(UserCommand::Enable(args)) => {
            user_change(file, m, args, roles::user::Lifecycle::Enable).await
        }
        Command::User(UserCommand::Password(args)) => {
            let what = roles::user::Lifecycle::Password(args.password);
            user_change(file, m, args.user, what).await
        }
        Command::User(UserCommand::RevokeKeys(args)) => {
            user_change(file, m, args, roles::user::Lifecycle::RevokeKeys).await
        }
    }
}
