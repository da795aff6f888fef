//! Generates the configuration reference of `docs/operations.md` from the clap definitions of
//! [`Config`]: each argument's section, variable, default and doc comment. The test fails when
//! the document is stale; regenerate it with
//! `UPDATE_DOCS=1 cargo test -p bourse --bin bourse config_reference`.

use super::Config;
use clap::{Arg, Args, CommandFactory};
use std::collections::BTreeSet;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
const START: &str =
    "<!-- config-reference:start (generated from crates/bourse/src/config/sections.rs) -->";
const END: &str = "<!-- config-reference:end -->";

/// The variables as they were before the settings were split into sections: deployments use
/// them, so none may be renamed or dropped by accident. (`BOURSE_QUOTA_RESERVATIONS` was dropped
/// on purpose with the feature: docs/decisions/0008.)
const VARIABLES: &str = "BOURSE_HTTP_ADDR BOURSE_DATABASE_URL BOURSE_DATABASE_MAX_CONNECTIONS \
    BOURSE_SQLITE_SYNCHRONOUS BOURSE_MIGRATE BOURSE_MQTT_URL BOURSE_MQTT_TOPIC \
    BOURSE_MQTT_CLIENT_ID BOURSE_MQTT_SHARED_GROUP BOURSE_FEED_RATE BOURSE_FEED_STOCKS \
    BOURSE_INGEST_BATCH BOURSE_MQTT_MAX_PACKET_BYTES BOURSE_TICK_MAX_BYTES \
    BOURSE_TICK_MAX_SKEW_SECS BOURSE_TICK_RETENTION_DAYS BOURSE_DEAD_LETTER_RETENTION_DAYS \
    BOURSE_DEAD_LETTER_MAX_ROWS BOURSE_RETENTION_INTERVAL_SECS BOURSE_RETENTION_BATCH \
    BOURSE_READ_CACHE_MS BOURSE_CREDENTIALS_CHECK_MS BOURSE_DEMO BOURSE_LOG BOURSE_LOG_FORMAT \
    BOURSE_AMQP_URL BOURSE_QUOTE_SERVICE_URL BOURSE_QUOTE_QUEUE BOURSE_STOOQ_URL \
    BOURSE_ALPHAVANTAGE_URL BOURSE_ALPHAVANTAGE_KEY BOURSE_QUOTE_CACHE_SECS BOURSE_JWT_SECRET \
    BOURSE_RELAY BOURSE_EXCHANGE_URL BOURSE_EXCHANGE_FAILURE_RATE BOURSE_EXCHANGE_LATENCY_MS \
    BOURSE_EXCHANGE_TIMEOUT_MS BOURSE_ORDER_MAX_ATTEMPTS BOURSE_RELAY_CONCURRENCY \
    BOURSE_RELAY_LEASE_MS BOURSE_ORDER_RETRY_BASE_MS BOURSE_ORDER_RETRY_MAX_MS BOURSE_REDIS_URL \
    BOURSE_QUOTA_ANON_PER_DAY BOURSE_QUOTA_USER_PER_DAY BOURSE_QUOTA_REDIS_PREFIX \
    BOURSE_TRUSTED_PROXY_HEADER BOURSE_REQUEST_LOG \
    BOURSE_REQUEST_LOG_MAX_BYTES BOURSE_REQUEST_LOG_KEEP BOURSE_HASH_CONCURRENCY \
    BOURSE_HASH_WAIT_MS BOURSE_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS BOURSE_LOGIN_FAILURES_PER_ADDRESS \
    BOURSE_LOGIN_FAILURES_PER_ACCOUNT BOURSE_LOGIN_WINDOW_SECS BOURSE_LOGIN_REDIS_PREFIX \
    BOURSE_HTTP_HEADER_TIMEOUT_SECS BOURSE_HTTP_IDLE_TIMEOUT_SECS BOURSE_HTTP_MAX_CONNECTIONS \
    BOURSE_HTTP_MAX_STREAMS BOURSE_REQUEST_TIMEOUT_SECS BOURSE_STOCK_CACHE_BYTES \
    BOURSE_SERIES_CACHE_BYTES BOURSE_QUOTE_CACHE_BYTES BOURSE_QUOTE_MAX_BATCH BOURSE_PAGE_DEFAULT \
    BOURSE_PAGE_MAX";

/// Every setting: the arguments of `bourse serve`, which takes every section.
fn settings() -> Vec<Arg> {
    let cmd = Config::augment_args(clap::Command::new("bourse"));
    cmd.get_arguments().cloned().collect()
}

fn variable(arg: &Arg) -> String {
    let env = arg
        .get_env()
        .unwrap_or_else(|| panic!("`{}` has no env", arg.get_id()));
    env.to_str().expect("UTF-8 variable").to_string()
}

/// The doc comment as written: clap drops the final period of a one-paragraph help.
fn doc(arg: &Arg) -> String {
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string());
    let mut doc = help.unwrap_or_default().replace('\n', " ");
    assert!(
        !doc.is_empty(),
        "config: `{}` needs a doc comment (it is the reference)",
        arg.get_id()
    );
    if !doc.ends_with('.') {
        doc.push('.');
    }
    doc
}

fn render_default(arg: &Arg) -> String {
    match arg.get_default_values() {
        [] => "unset".into(),
        [value] if value.is_empty() => "empty".into(),
        values => {
            let values: Vec<_> = values.iter().map(|v| v.to_string_lossy()).collect();
            format!("`{}`", values.join(","))
        }
    }
}

/// The Markdown: one table (variable, default, meaning) per section.
fn reference() -> String {
    let mut out = String::new();
    let mut heading = "";
    let settings = settings();
    for arg in &settings {
        let title = arg
            .get_help_heading()
            .expect("every section has a help heading");
        if title != heading {
            heading = title;
            out.push_str(&format!(
                "\n#### {title}\n\n| variable | default | meaning |\n|---|---|---|\n"
            ));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            variable(arg),
            render_default(arg),
            doc(arg).replace('|', "\\|")
        ));
    }
    out.push('\n');
    out
}

#[test]
fn config_reference_in_operations_md_is_current() {
    let doc = std::fs::read_to_string(DOC).expect("docs/operations.md");
    let (head, rest) = doc
        .split_once(START)
        .expect("start marker in docs/operations.md");
    let (_, tail) = rest
        .split_once(END)
        .expect("end marker in docs/operations.md");
    let fresh = format!("{head}{START}\n{}{END}{tail}", reference());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(DOC, &fresh).expect("write docs/operations.md");
    } else {
        assert!(
            doc == fresh,
            "docs/operations.md's configuration reference is stale: run \
             `UPDATE_DOCS=1 cargo test -p bourse --bin bourse config_reference`"
        );
    }
}

#[test]
fn config_reference_keeps_every_variable_name() {
    let names: Vec<String> = settings().iter().map(variable).collect();
    for name in &names {
        assert!(name.starts_with("BOURSE_"), "{name}");
    }
    let unique: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), names.len(), "a variable is defined twice");
    let before: BTreeSet<&str> = VARIABLES.split_whitespace().collect();
    assert_eq!(unique, before);
}

#[test]
fn config_reference_documents_each_setting() {
    let read_cache = settings()
        .into_iter()
        .find(|a| a.get_id() == "read_cache_ms")
        .expect("read_cache_ms");
    assert_eq!(
        doc(&read_cache),
        "How long hot reads may be served from memory (milliseconds)."
    );
    assert_eq!(render_default(&read_cache), "`50`");
}

/// `bourse serve --help` shows each flag with its variable and default, written by clap.
#[test]
fn serve_help_names_variables_and_defaults() {
    let mut cli = crate::Cli::command();
    let serve = cli.find_subcommand_mut("serve").expect("serve");
    let help = serve.render_long_help().to_string();
    for expected in [
        "--addr <ADDR>",
        "BOURSE_HTTP_ADDR",
        "--database-url <URL>",
        "[env: BOURSE_DATABASE_URL",
        "[default: sqlite://bourse.db]",
        "--quota-anon-per-day <N>",
        "[env: BOURSE_QUOTA_ANON_PER_DAY",
        "[default: 100]",
        "BOURSE_JWT_SECRET",
        "Database:",
    ] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
    let relay = cli.find_subcommand_mut("relay").expect("relay");
    let help = relay.render_long_help().to_string();
    assert!(help.contains("BOURSE_EXCHANGE_URL"), "{help}");
    assert!(!help.contains("BOURSE_JWT_SECRET"), "{help}");
}
