//! The roles of the binary, one module each.

pub mod demo_bars;
pub mod exchange;
pub mod import;
pub mod quote_service;
pub mod quotes;
pub mod relay;
pub mod serve;
pub mod streamer;
pub mod user;

use crate::config::{Database, Http};
use anyhow::Context;
use axum::routing::{get, MethodRouter};
use bourse_store::{ConnectOptions, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn connect(database: &Database) -> anyhow::Result<Store> {
    let opts = ConnectOptions {
        max_connections: database.database_max_connections,
        sqlite_synchronous: database.sqlite_synchronous,
        ..ConnectOptions::default()
    };
    let url = database.database_url.expose_secret();
    Store::connect(url, &opts)
        .await
        .with_context(|| format!("cannot open the database {}", redact(url)))
}

/// A URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Binds a role's HTTP listener: `BOURSE_HTTP_ADDR`, else the role's own default address.
pub async fn listen(http: &Http, default_addr: &str) -> anyhow::Result<TcpListener> {
    let addr = http.http_addr.as_deref().unwrap_or(default_addr);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves a role's HTTP `app` on `listener` with the configured connection bounds until
/// `shutdown`.
pub async fn serve_http(
    http: &Http,
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    bourse_api::server::serve(listener, app, http.limits(), shutdown.clone())
        .await
        .context("HTTP server failed")
}

/// Cancels `shutdown` when SIGTERM or Ctrl-C arrives, so that every part of a role stops
/// together.
pub fn cancel_on_signal(shutdown: &CancellationToken) {
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
}

/// `GET /metrics` of the roles other than `serve`: the Prometheus text of `handle`.
pub fn metrics_endpoint<S: Clone + Send + Sync + 'static>(
    handle: PrometheusHandle,
) -> MethodRouter<S> {
    get(move || std::future::ready(handle.render()))
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://bourse.db"), "sqlite://bourse.db");
    }
}
