//! The quote service over the REAL RabbitMQ (amqp://guest:guest@127.0.0.1:5672/%2f, or
//! `BOURSE_TEST_AMQP_URL`). These tests fail, never skip, when the broker is unreachable. Each
//! uses a queue of its own, so they run in parallel.

mod common;

use async_trait::async_trait;
use bourse_quotes::amqp::{AmqpQuoteClient, AmqpServer};
use bourse_quotes::fake::{FakeMode, FakeServer};
use bourse_quotes::{AmqpConfig, DailySummary, Quote, QuoteClient, QuoteError};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const READY: Duration = Duration::from_secs(10);

/// A fake upstream, a quote service over it, and an AMQP server for that service.
async fn server(config: &AmqpConfig) -> (FakeServer, AmqpServer) {
    let (fake, service) = common::service().await;
    let server = AmqpServer::spawn(Arc::new(service), config.clone(), &CancellationToken::new());
    assert!(
        server.wait_ready(READY).await,
        "server consumes {}",
        config.queue
    );
    (fake, server)
}

#[tokio::test]
async fn rpc_round_trip() {
    let config = common::amqp_config("round-trip");
    let (fake, server) = server(&config).await;
    let client = AmqpQuoteClient::new(config.clone());

    let q = client.quote("aapl.us").await.unwrap();
    assert_eq!((q.symbol.as_str(), q.name.as_str()), ("AAPL.US", "APPLE"));
    assert_eq!(q.close.to_string(), "189.79");
    assert_eq!(client.quote("T.US").await.unwrap().name, "AT&T");
    let s = client.daily("ibm").await.unwrap();
    assert_eq!(s.close_value, "130.7900");
    assert_eq!(s.variation_between_last_two_days.to_string(), "1.57");
    // Served from the quote service's cache the second time.
    client.quote("aapl.us").await.unwrap();
    assert_eq!(fake.stooq_hits(), 2);
    assert!(client.is_connected().await);

    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn error_replies_carry_code_and_message() {
    let config = common::amqp_config("errors");
    let (fake, server) = server(&config).await;
    let client = AmqpQuoteClient::new(config.clone());

    assert_eq!(
        client.quote("appl.us").await.unwrap_err(),
        QuoteError::NotFound("Unknown symbol: APPL.US".into())
    );
    let err = client.daily("nope").await.unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert!(err.message().starts_with("Invalid API call."));
    fake.set_mode(FakeMode::Throttled);
    assert_eq!(
        client.quote("msft.us").await.unwrap_err(),
        QuoteError::Throttled("Exceeded the daily hits limit".into())
    );
    fake.set_mode(FakeMode::Slow(Duration::from_secs(3)));
    assert_eq!(client.quote("msft.us").await.unwrap_err().code(), "timeout");
    fake.set_mode(FakeMode::ServerError);
    assert_eq!(
        client.daily("msft").await.unwrap_err().code(),
        "bad_upstream"
    );
    assert_eq!(client.quote("").await.unwrap_err().code(), "bad_request");

    client.close().await;
    server.shutdown().await;
}

/// Talks to the server with a plain AMQP client, to pin the wire contract itself.
/// Publishes a request as any client would and returns the reply's body, checking that the reply
/// carries the request's correlation id.
/// A consumer of `queue` whose deliveries need no acknowledgement, as a raw client reads them.
async fn consume(channel: &lapin::Channel, queue: &str) -> lapin::Consumer {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
}

async fn ask(
    channel: &lapin::Channel,
    replies: &mut lapin::Consumer,
    queue: &str,
    reply_to: &lapin::types::ShortString,
    request: &[u8],
    id: &str,
) -> Value {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            request,
            BasicProperties::default()
                .with_reply_to(reply_to.clone())
                .with_correlation_id(id.into()),
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("a reply within 5 s")
        .expect("consumer open")
        .expect("delivery");
    let correlation = reply
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.to_string());
    assert_eq!(correlation.as_deref(), Some(id));
    serde_json::from_slice(&reply.data).unwrap()
}

#[tokio::test]
async fn the_wire_contract_as_seen_by_any_amqp_client() {
    let config = common::amqp_config("wire");
    let (_fake, server) = server(&config).await;

    let connection =
        Connection::connect(config.url.expose_secret(), ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let reply_queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut replies = consume(&channel, reply_queue.name().as_str()).await;

    let cases = [
        (
            r#"{"symbol": "aapl.us"}"#,
            json!({"data": {"symbol": "AAPL.US", "name": "APPLE", "date": "2023-11-27",
                "time": "22:00:13", "open": 189.92, "high": 190.67, "low": 188.9,
                "close": 189.79, "volume": 30984740}}),
        ),
        (
            r#"{"symbol": "ibm", "kind": "daily"}"#,
            json!({"data": {"symbol": "IBM", "last_refreshed": "2022-07-29",
                "open_value": "129.5200", "high_value": "131.0000", "low_value": "129.3100",
                "close_value": "130.7900", "variation_between_last_two_days": 1.57}}),
        ),
        (
            r#"{"symbol": "appl.us"}"#,
            json!({"error": {"code": "not_found", "message": "Unknown symbol: APPL.US"}}),
        ),
    ];
    let reply_to = reply_queue.name().clone();
    for (i, (request, expected)) in cases.iter().enumerate() {
        let body = ask(
            &channel,
            &mut replies,
            &config.queue,
            &reply_to,
            request.as_bytes(),
            &format!("corr-{i}"),
        )
        .await;
        assert_eq!(&body, expected, "{request}");
    }

    // A batch: an array of requests gets an array of replies, in the same order.
    let batch =
        br#"[{"symbol": "appl.us"}, {"symbol": "aapl.us"}, {"symbol": "ibm", "kind": "daily"}]"#;
    assert_eq!(
        ask(
            &channel,
            &mut replies,
            &config.queue,
            &reply_to,
            batch,
            "batch"
        )
        .await,
        json!([cases[2].1.clone(), cases[0].1.clone(), cases[1].1.clone()])
    );

    // Malformed requests get an error reply too, and do not stop the server.
    let body = ask(
        &channel,
        &mut replies,
        &config.queue,
        &reply_to,
        b"not json",
        "bad",
    )
    .await;
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(server.is_ready());

    connection.close(200, "done".into()).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn without_any_server_the_client_fails_fast() {
    let config = common::amqp_config("no-server");
    let client = AmqpQuoteClient::new(config);
    client.connect().await.expect("the broker is reachable");
    let started = Instant::now();
    let err = client.quote("aapl.us").await.unwrap_err();
    // The broker returned the unroutable request (mandatory flag): no queue, no server.
    assert_eq!(
        err,
        QuoteError::Unavailable("no quote service is serving requests".into())
    );
    assert_eq!(client.daily("ibm").await.unwrap_err().code(), "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    client.close().await;
}

#[tokio::test]
async fn with_the_server_gone_calls_time_out_within_5_s() {
    let config = common::amqp_config("server-gone");
    let (_fake, server) = server(&config).await;
    let client = AmqpQuoteClient::new(config.clone());
    client.quote("aapl.us").await.unwrap();
    let stopping = Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(6));

    // The queue is still there, nobody consumes it: the default 5 s timeout applies.
    assert_eq!(config.timeout, Duration::from_secs(5));
    let started = Instant::now();
    let err = client.quote("msft.us").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code(), "timeout", "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(4900) && elapsed < Duration::from_millis(6500),
        "{elapsed:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn a_server_started_later_is_used() {
    let mut config = common::amqp_config("later");
    config.timeout = Duration::from_secs(1);
    let client = AmqpQuoteClient::new(config.clone());
    assert!(client.quote("aapl.us").await.is_err());

    let (_fake, server) = server(&config).await;
    let q = client.quote("aapl.us").await.unwrap();
    assert_eq!(q.symbol, "AAPL.US");
    client.close().await;
    server.shutdown().await;
}

/// A quote service that takes its time, to see requests overlap.
struct Slow(Duration);

#[async_trait]
impl QuoteClient for Slow {
    async fn quote(&self, symbol: &str) -> Result<Quote, QuoteError> {
        tokio::time::sleep(self.0).await;
        Err(QuoteError::NotFound(format!("slow {symbol}")))
    }

    async fn daily(&self, symbol: &str) -> Result<DailySummary, QuoteError> {
        tokio::time::sleep(self.0).await;
        Err(QuoteError::NotFound(format!("slow {symbol}")))
    }
}

/// Makes `n` concurrent calls for `symbol(i)` and checks that each gets the `NotFound` error its
/// own symbol calls for: replies reach the call that asked (correlation ids are not mixed up).
async fn concurrent_calls(
    client: &Arc<AmqpQuoteClient>,
    n: usize,
    symbol: impl Fn(usize) -> String,
    message: impl Fn(&str) -> String,
) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (client, symbol) = (Arc::clone(client), symbol(i));
            tokio::spawn(async move { (client.quote(&symbol).await, symbol) })
        })
        .collect();
    for call in calls {
        let (answer, symbol) = call.await.unwrap();
        assert_eq!(answer.unwrap_err(), QuoteError::NotFound(message(&symbol)));
    }
}

/// The client seen from the broker, with a hand-written server (plain lapin, the documented wire
/// format): concurrent calls share messages, and every call gets the reply to its own request.
#[tokio::test]
async fn concurrent_calls_share_messages_and_get_their_own_replies() {
    let mut config = common::amqp_config("batching");
    config.batches_in_flight = 2;
    let connection =
        Connection::connect(config.url.expose_secret(), ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-expires".into(),
        lapin::types::AMQPValue::LongLongInt(60_000),
    );
    channel
        .queue_declare(
            config.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .unwrap();
    let mut requests = consume(&channel, &config.queue).await;
    // Answers each request with an error naming its symbol (the simplest reply to check), after
    // a pause, so that calls pile up while replies are awaited. Counts messages and requests.
    let server = tokio::spawn(async move {
        let (mut messages, mut answered) = (0usize, 0usize);
        while answered < 200 {
            let delivery = requests.next().await.unwrap().unwrap();
            messages += 1;
            let body: Value = serde_json::from_slice(&delivery.data).unwrap();
            let reply_to = |request: &Value| {
                json!({"error": {"code": "not_found",
                    "message": format!("seen {}", request["symbol"].as_str().unwrap())}})
            };
            let reply = match &body {
                Value::Array(batch) => {
                    answered += batch.len();
                    Value::Array(batch.iter().map(reply_to).collect())
                }
                single => {
                    answered += 1;
                    reply_to(single)
                }
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            channel
                .basic_publish(
                    "".into(),
                    delivery
                        .properties
                        .reply_to()
                        .clone()
                        .unwrap()
                        .as_str()
                        .into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&reply).unwrap(),
                    BasicProperties::default()
                        .with_correlation_id(delivery.properties.correlation_id().clone().unwrap()),
                )
                .await
                .unwrap();
        }
        connection.close(200, "done".into()).await.unwrap();
        messages
    });

    let client = Arc::new(AmqpQuoteClient::new(config.clone()));
    concurrent_calls(
        &client,
        200,
        |i| format!("s{i}.us"),
        |s| format!("seen {s}"),
    )
    .await;
    let messages = server.await.unwrap();
    // 200 calls; at most 32 per message (the default); two messages out at once.
    assert!(
        (7..=100).contains(&messages),
        "200 calls went out in {messages} messages"
    );
    client.close().await;
}

#[tokio::test]
async fn requests_are_handled_concurrently() {
    let config = common::amqp_config("concurrent");
    let server = AmqpServer::spawn(
        Arc::new(Slow(Duration::from_millis(500))),
        config.clone(),
        &CancellationToken::new(),
    );
    assert!(server.wait_ready(READY).await);
    let client = Arc::new(AmqpQuoteClient::new(config.clone()));
    let started = Instant::now();
    concurrent_calls(&client, 40, |i| format!("s{i}"), |s| format!("slow {s}")).await;
    // One at a time would take 20 s.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_reconnects_after_losing_the_broker() {
    let config = common::amqp_config("server-reconnect");
    let (_fake, server) = server(&config).await;
    let client = AmqpQuoteClient::new(config.clone());
    client.quote("aapl.us").await.unwrap();

    let mut ready = server.ready_watch();
    let closed = common::kill_connections(&format!("bourse-quote-service {}", config.queue)).await;
    assert_eq!(closed, 1);
    tokio::time::timeout(READY, ready.wait_for(|r| !*r))
        .await
        .expect("server notices the loss")
        .unwrap();
    assert!(server.wait_ready(READY).await, "server consumes again");
    assert_eq!(client.quote("msft.us").await.unwrap().symbol, "MSFT.US");
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_reconnects_after_losing_the_broker() {
    let config = common::amqp_config("client-reconnect");
    let (_fake, server) = server(&config).await;
    let client = AmqpQuoteClient::new(config.clone());
    client.quote("aapl.us").await.unwrap();

    let closed = common::kill_connections(&format!("bourse-quote-client {}", config.queue)).await;
    assert_eq!(closed, 1);
    // Whether or not the client has noticed yet, the next call goes through.
    assert_eq!(client.quote("msft.us").await.unwrap().symbol, "MSFT.US");
    assert!(client.is_connected().await);

    // Calls waiting when the connection drops fail at once instead of waiting for the timeout.
    let slow = common::amqp_config("client-reconnect-slow");
    let slow_server = AmqpServer::spawn(
        Arc::new(Slow(Duration::from_secs(3))),
        slow.clone(),
        &CancellationToken::new(),
    );
    assert!(slow_server.wait_ready(READY).await);
    let slow_client = Arc::new(AmqpQuoteClient::new(slow.clone()));
    let waiting = {
        let slow_client = Arc::clone(&slow_client);
        tokio::spawn(async move { slow_client.quote("aapl.us").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Timed from the moment the broker has closed the connection (closing it via the
    // management API can itself take a while on a loaded machine).
    common::kill_connections(&format!("bourse-quote-client {}", slow.queue)).await;
    let started = Instant::now();
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    client.close().await;
    slow_client.close().await;
    server.shutdown().await;
    slow_server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_calls_and_keeps_the_server_retrying() {
    let port = common::closed_port().await;
    let mut config = common::amqp_config("unreachable");
    config.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f").into();
    let client = AmqpQuoteClient::new(config.clone());
    let started = Instant::now();
    assert_eq!(
        client.quote("aapl.us").await.unwrap_err().code(),
        "unavailable"
    );
    assert!(client.connect().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));

    let (_fake, service) = common::service().await;
    let token = CancellationToken::new();
    let server = AmqpServer::spawn(Arc::new(service), config, &token);
    assert!(!server.wait_ready(Duration::from_millis(700)).await);
    // Cancelling the parent token stops it too.
    token.cancel();
    let stopping = Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(1));
}

/// A real broker restart (`rabbitmqctl stop_app` / `start_app`). Ignored by default because it
/// disturbs every other user of the broker; run it alone with
/// `cargo test -p bourse-quotes --test amqp -- --ignored broker_restart`.
#[tokio::test]
#[ignore = "restarts the shared broker"]
async fn both_sides_survive_a_broker_restart() {
    let config = common::amqp_config("restart");
    let (_fake, server) = server(&config).await;
    let client = AmqpQuoteClient::new(config.clone());
    client.quote("aapl.us").await.unwrap();

    let rabbitmqctl = |command: &'static str| {
        tokio::task::spawn_blocking(move || {
            let status = std::process::Command::new("rabbitmqctl")
                .args(["-q", command])
                .status()
                .expect("rabbitmqctl runs");
            assert!(status.success(), "rabbitmqctl {command}");
        })
    };
    rabbitmqctl("stop_app").await.unwrap();
    assert_eq!(
        client.quote("msft.us").await.unwrap_err().code(),
        "unavailable"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!server.is_ready());
    rabbitmqctl("start_app").await.unwrap();

    assert!(
        server.wait_ready(Duration::from_secs(30)).await,
        "server is back"
    );
    assert_eq!(client.quote("msft.us").await.unwrap().symbol, "MSFT.US");
    client.close().await;
    server.shutdown().await;
}
