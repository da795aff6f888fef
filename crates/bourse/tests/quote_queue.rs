//! The quote queue refuses what the API's client never sends, as an attacker with publish rights
//! on `bourse.quotes` would try it: the real `bourse quote-service` on the real RabbitMQ, in
//! front of a fake stooq that counts its calls.

mod common;

use bourse_quotes::fake::FakeUpstream;
use common::{amqp_url, unique, Server};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{json, Value};
use std::time::Duration;

/// RabbitMQ's direct reply-to: replies come back on the publishing channel.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

struct Rpc {
    channel: Channel,
    replies: Consumer,
    queue: String,
}

impl Rpc {
    async fn connect(queue: &str) -> Rpc {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ at 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        let replies = channel
            .basic_consume(
                REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Rpc {
            channel,
            replies,
            queue: queue.to_string(),
        }
    }

    /// Publishes `body` on the quote queue and returns the reply.
    async fn ask(&mut self, body: &[u8]) -> Value {
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_reply_to(REPLY_TO.into())
                    .with_correlation_id(unique("c").into()),
            )
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .expect("a reply within 10 s")
            .expect("consumer open")
            .expect("delivery");
        serde_json::from_slice(&reply.data).unwrap()
    }
}

fn batch(n: usize) -> Vec<u8> {
    let requests: Vec<Value> = (0..n)
        .map(|i| json!({"symbol": format!("s{i}.us")}))
        .collect();
    serde_json::to_vec(&requests).unwrap()
}

fn refused(reply: &Value, why: &str) {
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_the_client_never_sends_are_refused_without_upstream_calls() {
    let upstream = FakeUpstream::start().await.expect("fake stooq");
    let queue = unique("bourse.quotes.test");
    let env: Vec<(String, String)> = [
        ("BOURSE_AMQP_URL", amqp_url()),
        ("BOURSE_QUOTE_QUEUE", queue.clone()),
        ("BOURSE_STOOQ_URL", upstream.url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let service = Server::start_role("quote-service", &env).await;
    let mut rpc = Rpc::connect(&queue).await;

    // 2,000 requests in one message: refused whole.
    refused(&rpc.ask(&batch(2000)).await, "at most 8192 bytes");
    // One over the client's batch of 32, small enough in bytes: refused too.
    refused(&rpc.ask(&batch(33)).await, "at most 32 requests");
    // Fields the client never sends.
    refused(
        &rpc.ask(br#"{"symbol": "aapl.us", "limit": 1000}"#).await,
        "unknown field `limit`",
    );
    refused(
        &rpc.ask(br#"[{"symbol": "aapl.us"}, {"symbol": "t.us", "x": 1}]"#)
            .await,
        "unknown field `x`",
    );
    // One oversized request.
    let huge = serde_json::to_vec(&json!({"symbol": "a".repeat(100_000)})).unwrap();
    refused(&rpc.ask(&huge).await, "at most 8192 bytes");
    assert_eq!(upstream.stooq_hits(), 0, "no upstream call for any of them");

    // What the client does send is still answered: a full batch, one call per symbol.
    let reply = rpc.ask(&batch(32)).await;
    assert_eq!(reply.as_array().map(Vec::len), Some(32), "{reply}");
    assert_eq!(upstream.stooq_hits(), 32);
    let reply = rpc.ask(br#"{"symbol": "aapl.us"}"#).await;
    assert_eq!(reply["data"]["symbol"], "AAPL.US", "{reply}");

    let metrics = service.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("bourse_quote_messages_refused_total 5"),
        "five refusals counted"
    );
}
