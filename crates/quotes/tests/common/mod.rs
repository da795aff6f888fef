//! Helpers shared by the integration tests: a fake upstream with a service in front of it, and
//! unique names on the real RabbitMQ so tests run side by side.
#![allow(dead_code)]

use bourse_quotes::fake::{FakeServer, FakeUpstream};
use bourse_quotes::{AmqpConfig, QuoteConfig, QuoteService};
use std::time::Duration;

/// The broker the AMQP tests use; they fail (never skip) when it is unreachable.
pub fn broker_url() -> String {
    std::env::var("BOURSE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// An AMQP config on a queue of its own, deleted by the broker a while after the test.
pub fn amqp_config(test: &str) -> AmqpConfig {
    let mut config = AmqpConfig::new(broker_url()).with_queue(format!(
        "bourse.quotes.test.{test}.{}",
        uuid::Uuid::new_v4()
    ));
    config.queue_expires = Some(Duration::from_secs(60));
    config.reconnect_min = Duration::from_millis(100);
    config.reconnect_max = Duration::from_millis(500);
    config
}

/// Service settings pointing both providers at the fake.
pub fn config_for(fake: &FakeServer) -> QuoteConfig {
    QuoteConfig {
        stooq_url: fake.url(),
        alphavantage_url: fake.url(),
        alphavantage_key: "test-key".into(),
        request_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(500),
        ..QuoteConfig::default()
    }
}

/// A fake upstream and a service over it.
pub async fn service() -> (FakeServer, QuoteService) {
    let fake = FakeUpstream::start().await.expect("fake upstream starts");
    let service = QuoteService::new(&config_for(&fake)).expect("service builds");
    (fake, service)
}

/// Serves an axum router on 127.0.0.1:0; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A local port nothing listens on.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Closes, from the broker side, every connection whose name contains `name_part` (as a
/// broker restart or a network cut would), using `rabbitmqctl`. Returns how many it closed.
pub async fn kill_connections(name_part: &str) -> usize {
    let name_part = name_part.to_owned();
    tokio::task::spawn_blocking(move || {
        // Tab-separated `pid<TAB>client_properties`; the JSON formatter prints pids in a form
        // close_connection does not accept.
        let output = std::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "--no-table-headers",
                "list_connections",
                "pid",
                "client_properties",
            ])
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl list_connections failed: {output:?}"
        );
        let listing = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut closed = 0;
        for line in listing.lines().filter(|l| l.contains(&name_part)) {
            let pid = line.split('\t').next().expect("pid column").trim();
            let status = std::process::Command::new("rabbitmqctl")
                .args(["-q", "close_connection", pid, "test closes the connection"])
                .status()
                .expect("rabbitmqctl runs");
            assert!(
                status.success(),
                "rabbitmqctl close_connection {pid} failed"
            );
            closed += 1;
        }
        closed
    })
    .await
    .expect("rabbitmqctl task")
}
