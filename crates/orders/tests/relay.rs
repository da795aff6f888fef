//! The relay against real databases (SQLite and PostgreSQL) and the in-process simulated
//! exchange; the events publisher against the local RabbitMQ.

use bourse_domain::order::{events, Backoff, NewOrder, OrderStatus};
use bourse_orders::publisher::{EventPublisher, PublisherConfig};
use bourse_orders::{Exchange, PlacementRequest, Relay, RelayConfig, SimulatedExchange};
use bourse_store::orders::{Creation, OrderQuery};
use bourse_store::testing::on_both;
use bourse_store::users::{NewUser, Role};
use bourse_store::Store;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn amqp_url() -> String {
    std::env::var("BOURSE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn user(store: &Store) -> Uuid {
    store
        .create_user(&NewUser {
            username: format!("u{}", Uuid::new_v4().simple()),
            email: None,
            first_name: None,
            last_name: None,
            password_hash: None,
            role: Role::User,
        })
        .await
        .unwrap()
        .id
}

fn order(q: i64) -> NewOrder {
    NewOrder::from_json(&json!({
        "type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": q, "limit_price": 10.5
    }))
    .unwrap()
}

async fn create_orders(store: &Store, n: usize) -> Vec<Uuid> {
    let u = user(store).await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        match store
            .create_order(u, &order(i as i64 + 1), None)
            .await
            .unwrap()
        {
            Creation::Created(o) => ids.push(o.id),
            other => panic!("{other:?}"),
        }
    }
    ids
}

fn fast_config(worker: &str) -> RelayConfig {
    RelayConfig {
        worker: worker.into(),
        concurrency: 64,
        batch: 32,
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        max_attempts: 20,
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(200),
        },
        drain_timeout: Duration::from_secs(5),
    }
}

async fn count(store: &Store, status: OrderStatus) -> usize {
    store
        .list_orders(&OrderQuery {
            status: Some(status),
            limit: 500,
            ..OrderQuery::default()
        })
        .await
        .unwrap()
        .len()
}

async fn wait_until_settled(store: &Store, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done =
            count(store, OrderStatus::Placed).await + count(store, OrderStatus::Failed).await;
        if done == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} orders settled within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every order placed exactly once at the exchange, with a coherent history.
async fn assert_placed_once(store: &Store, exchange: &SimulatedExchange, ids: &[Uuid]) {
    assert_eq!(count(store, OrderStatus::Placed).await, ids.len());
    let placements = exchange.placements();
    assert_eq!(placements.len(), ids.len(), "one placement per order");
    let by_id: HashMap<_, _> = placements.iter().map(|p| (p.order_id, p)).collect();
    for id in ids {
        assert!(by_id.contains_key(id), "order {id} is at the exchange");
        let o = store.get_order(*id).await.unwrap().unwrap();
        let evs = store.order_events(*id).await.unwrap();
        let names: Vec<_> = evs.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names.first(), Some(&events::CREATED));
        assert_eq!(names.last(), Some(&events::PLACED));
        assert!(names[1..names.len() - 1]
            .iter()
            .all(|n| *n == events::PLACEMENT_FAILED));
        assert_eq!(
            o.attempts as usize,
            names.len() - 1,
            "one event per attempt"
        );
        assert!(o.placed_at.is_some());
    }
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flaky_exchange_still_gets_every_order_once() {
    on_both(|store| async move {
        let ids = create_orders(&store, 150).await;
        let exchange = Arc::new(SimulatedExchange::new(0.3, Duration::from_millis(10)));
        let shutdown = CancellationToken::new();
        let relay = Relay::new(store.clone(), exchange.clone(), fast_config("r1"));
        let task = tokio::spawn(relay.run(shutdown.clone()));
        wait_until_settled(&store, ids.len(), Duration::from_secs(20)).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_placed_once(&store, &exchange, &ids).await;
        assert!(
            exchange.placements().iter().all(|p| p.submissions == 1),
            "no order was submitted again after it was placed"
        );
        let retried = {
            let mut n = 0;
            for id in &ids {
                if store.get_order(*id).await.unwrap().unwrap().attempts > 1 {
                    n += 1;
                }
            }
            n
        };
        assert!(retried > 10, "about 30% needed a retry: {retried}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_relays_share_the_work_and_place_each_order_once() {
    on_both(|store| async move {
        let ids = create_orders(&store, 200).await;
        let exchange = Arc::new(SimulatedExchange::new(0.1, Duration::from_millis(20)));
        let shutdown = CancellationToken::new();
        let a = tokio::spawn(
            Relay::new(store.clone(), exchange.clone(), fast_config("ra")).run(shutdown.clone()),
        );
        let b = tokio::spawn(
            Relay::new(store.clone(), exchange.clone(), fast_config("rb")).run(shutdown.clone()),
        );
        wait_until_settled(&store, ids.len(), Duration::from_secs(20)).await;
        shutdown.cancel();
        a.await.unwrap();
        b.await.unwrap();
        assert_placed_once(&store, &exchange, &ids).await;
        assert!(exchange.placements().iter().all(|p| p.submissions == 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_fails_after_its_last_attempt_keeping_the_error() {
    on_both(|store| async move {
        let ids = create_orders(&store, 3).await;
        let exchange = Arc::new(SimulatedExchange::new(1.0, Duration::ZERO));
        let shutdown = CancellationToken::new();
        let mut config = fast_config("r1");
        config.max_attempts = 3;
        let task =
            tokio::spawn(Relay::new(store.clone(), exchange.clone(), config).run(shutdown.clone()));
        wait_until_settled(&store, ids.len(), Duration::from_secs(10)).await;
        shutdown.cancel();
        task.await.unwrap();
        assert!(exchange.placements().is_empty());
        for id in ids {
            let o = store.get_order(id).await.unwrap().unwrap();
            assert_eq!(o.status, OrderStatus::Failed);
            assert_eq!(o.attempts, 3);
            assert!(
                o.last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("could not place"),
                "{:?}",
                o.last_error
            );
            let names: Vec<_> = store
                .order_events(id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect();
            assert_eq!(
                names,
                [
                    events::CREATED,
                    events::PLACEMENT_FAILED,
                    events::PLACEMENT_FAILED,
                    events::PLACEMENT_FAILED,
                    events::FAILED
                ]
            );
        }
        assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_placement_left_unrecorded_by_a_dead_relay_is_recorded_once() {
    on_both(|store| async move {
        let ids = create_orders(&store, 1).await;
        let id = ids[0];
        let exchange = Arc::new(SimulatedExchange::new(0.0, Duration::ZERO));
        // A relay claims the order, places it, and dies before recording anything.
        let claimed = store
            .claim_outbox("dead-relay", 10, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        exchange
            .place(&id.to_string(), &PlacementRequest::from(&claimed[0]))
            .await
            .unwrap();
        // Another relay takes over once the lease ends: the exchange answers with the first
        // placement, and the order is recorded as placed, once.
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            Relay::new(store.clone(), exchange.clone(), fast_config("heir")).run(shutdown.clone()),
        );
        wait_until_settled(&store, 1, Duration::from_secs(10)).await;
        shutdown.cancel();
        task.await.unwrap();
        let placements = exchange.placements();
        assert_eq!(placements.len(), 1);
        assert_eq!(placements[0].submissions, 2, "submitted twice, placed once");
        let evs = store.order_events(id).await.unwrap();
        assert_eq!(evs.last().unwrap().event, events::PLACED);
        assert_eq!(evs.last().unwrap().data["duplicate"], true);
        let o = store.get_order(id).await.unwrap().unwrap();
        assert_eq!(
            o.placed_at
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            placements[0].placed_at,
            "the exchange's first placement time"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_placements_in_flight_finish() {
    on_both(|store| async move {
        let ids = create_orders(&store, 20).await;
        let exchange = Arc::new(SimulatedExchange::new(0.0, Duration::from_millis(400)));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            Relay::new(store.clone(), exchange.clone(), fast_config("r1")).run(shutdown.clone()),
        );
        tokio::time::sleep(Duration::from_millis(150)).await; // all 20 in flight
        shutdown.cancel();
        task.await.unwrap();
        // Everything that reached the exchange is recorded: nothing waits for a lease.
        assert_placed_once(&store, &exchange, &ids).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_published_to_the_bourse_events_exchange() {
    on_both(|store| async move {
        // A private queue bound to every order event, declared before anything is published.
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ at BOURSE_TEST_AMQP_URL or 127.0.0.1:5672");
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            "bourse.events".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            queue.name().clone(),
            "bourse.events".into(),
            "order.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();

        let ids = create_orders(&store, 2).await;
        let exchange = Arc::new(SimulatedExchange::new(0.0, Duration::from_millis(5)));
        let shutdown = CancellationToken::new();
        let relay = Relay::new(store.clone(), exchange.clone(), fast_config("r1"));
        let mut publisher_config = PublisherConfig::new(amqp_url());
        publisher_config.idle = Duration::from_millis(50);
        let publisher = EventPublisher::new(store.clone(), publisher_config, relay.recorded());
        let p = tokio::spawn(publisher.run(shutdown.clone()));
        let r = tokio::spawn(relay.run(shutdown.clone()));

        // Other tests' events may arrive on the shared exchange: keep only ours.
        let mut seen: HashMap<Uuid, Vec<(String, Value)>> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while seen.values().map(Vec::len).sum::<usize>() < 4 {
            let delivery = tokio::time::timeout_at(deadline, consumer.next())
                .await
                .expect("order events within 15 s")
                .unwrap()
                .unwrap();
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let body: Value = serde_json::from_slice(&delivery.data).unwrap();
            let order_id: Uuid = body["order_id"].as_str().unwrap().parse().unwrap();
            if ids.contains(&order_id) {
                assert_eq!(
                    delivery.routing_key.as_str(),
                    body["event"].as_str().unwrap()
                );
                seen.entry(order_id)
                    .or_default()
                    .push((body["event"].as_str().unwrap().to_string(), body));
            }
        }
        shutdown.cancel();
        r.await.unwrap();
        p.await.unwrap();
        for id in &ids {
            let got = &seen[id];
            let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, [events::CREATED, events::PLACED], "in order, once");
            let created = &got[0].1;
            assert_eq!(created["data"]["instrument"], "US0378331005");
            assert!(created["at"].as_str().unwrap().ends_with('Z'));
            let keys: Vec<_> = created.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys.len(), 4, "event, order_id, at, data: {created}");
        }
        // All of them are marked published: nothing is sent again.
        let batch = store.unpublished_events(100).await.unwrap().unwrap();
        assert!(batch.events.is_empty(), "{:?}", batch.events);
        let _ = conn.close(200, "done".into()).await;
    })
    .await;
}
