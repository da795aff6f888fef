//! Order and outbox repository tests, each run against SQLite and against the local PostgreSQL.

use bourse_domain::order::{events, NewOrder, OrderStatus};
use bourse_store::orders::{AttemptOutcome, Creation, Order, OrderQuery};
use bourse_store::testing::on_both;
use bourse_store::users::{NewUser, Role};
use bourse_store::{Store, StoreError};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

async fn user(store: &Store, name: &str) -> Uuid {
    store
        .create_user(&NewUser {
            username: name.into(),
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

fn limit_order(quantity: i64) -> NewOrder {
    NewOrder::from_json(&json!({
        "type": "limit", "side": "buy", "instrument": "US0378331005",
        "quantity": quantity, "limit_price": 150.25
    }))
    .unwrap()
}

fn market_order() -> NewOrder {
    NewOrder::from_json(
        &json!({"type": "market", "side": "sell", "instrument": "EGS60121C018", "quantity": 3}),
    )
    .unwrap()
}

async fn create(store: &Store, user: Uuid, o: &NewOrder) -> Order {
    match store.create_order(user, o, None).await.unwrap() {
        Creation::Created(o) => o,
        other => panic!("expected a new order, got {other:?}"),
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_order_is_stored_with_its_outbox_row_and_created_event() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let o = create(&store, alice, &limit_order(10)).await;
        assert_eq!(o.status, OrderStatus::Pending);
        assert_eq!(o.attempts, 0);
        let got = store.get_order(o.id).await.unwrap().unwrap();
        assert_eq!(got, o, "what create returns is what a read returns");
        assert_eq!(got.order.limit_price().unwrap().to_string(), "150.25");

        let m = create(&store, alice, &market_order()).await;
        assert_eq!(store.get_order(m.id).await.unwrap().unwrap().order.limit_price(), None);

        let evs = store.order_events(o.id).await.unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event, events::CREATED);
        assert_eq!(
            evs[0].data,
            json!({"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": "150.25"})
        );
        let stats = store.outbox_stats().await.unwrap();
        assert_eq!(stats.depth, 2);
        assert!(stats.oldest_age < Duration::from_secs(60));
        assert!(store.get_order(Uuid::new_v4()).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_failed_create_leaves_nothing_behind() {
    on_both(|store| async move {
        // A user that does not exist: the order insert fails on its foreign key.
        let err = store
            .create_order(Uuid::new_v4(), &limit_order(1), Some("k1"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
        let batch = store.unpublished_events(100).await.unwrap().unwrap();
        assert!(batch.events.is_empty(), "no event without its order");
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_order_per_user() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let first = match store
            .create_order(alice, &limit_order(10), Some("key-1"))
            .await
            .unwrap()
        {
            Creation::Created(o) => o,
            other => panic!("{other:?}"),
        };
        // The same order again (a retry): the first order, nothing new written.
        let again = store
            .create_order(alice, &limit_order(10), Some("key-1"))
            .await
            .unwrap();
        assert_eq!(again, Creation::Replayed(first.clone()));
        assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
        // The same key with a different order: conflict.
        let err = store
            .create_order(alice, &limit_order(11), Some("key-1"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        // Keys are scoped to the user.
        let bobs = store
            .create_order(bob, &limit_order(10), Some("key-1"))
            .await
            .unwrap();
        assert!(matches!(bobs, Creation::Created(ref o) if o.id != first.id));
        // Another key: another order.
        let other = store
            .create_order(alice, &limit_order(10), Some("key-2"))
            .await
            .unwrap();
        assert!(matches!(other, Creation::Created(_)));
        assert_eq!(store.outbox_stats().await.unwrap().depth, 3);
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_order() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create_order(alice, &limit_order(5), Some("same"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut ids = HashSet::new();
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                Creation::Created(o) => {
                    created += 1;
                    ids.insert(o.id);
                }
                Creation::Replayed(o) => {
                    ids.insert(o.id);
                }
            }
        }
        assert_eq!(created, 1);
        assert_eq!(ids.len(), 1);
        assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
    })
    .await;
}

#[tokio::test]
async fn lists_are_scoped_newest_first_filtered_and_paginated() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let mut alices = Vec::new();
        for q in 1..=5 {
            alices.push(create(&store, alice, &limit_order(q)).await);
        }
        let bobs = create(&store, bob, &market_order()).await;
        let q = |user, status, before, limit| OrderQuery {
            user,
            status,
            before,
            limit,
        };

        let mine = store
            .list_orders(&q(Some(alice), None, None, 50))
            .await
            .unwrap();
        let ids: Vec<_> = mine.iter().map(|o| o.id).collect();
        let expected: Vec<_> = alices.iter().rev().map(|o| o.id).collect();
        assert_eq!(ids, expected, "the caller's orders, newest first");

        let all = store.list_orders(&q(None, None, None, 50)).await.unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].id, bobs.id);

        let page1 = store
            .list_orders(&q(Some(alice), None, None, 2))
            .await
            .unwrap();
        assert_eq!(
            page1.iter().map(|o| o.id).collect::<Vec<_>>(),
            expected[..2]
        );
        let page2 = store
            .list_orders(&q(Some(alice), None, Some(page1[1].id), 2))
            .await
            .unwrap();
        assert_eq!(
            page2.iter().map(|o| o.id).collect::<Vec<_>>(),
            expected[2..4]
        );
        let unknown = store
            .list_orders(&q(Some(alice), None, Some(Uuid::new_v4()), 2))
            .await
            .unwrap();
        assert!(unknown.is_empty());

        store.claim_outbox("w", 100, LEASE).await.unwrap();
        store
            .mark_placed(alices[0].id, chrono::Utc::now(), false)
            .await
            .unwrap();
        let placed = store
            .list_orders(&q(Some(alice), Some(OrderStatus::Placed), None, 50))
            .await
            .unwrap();
        assert_eq!(
            placed.iter().map(|o| o.id).collect::<Vec<_>>(),
            [alices[0].id]
        );
        let pending = store
            .list_orders(&q(None, Some(OrderStatus::Pending), None, 50))
            .await
            .unwrap();
        assert_eq!(pending.len(), 5);
    })
    .await;
}

#[tokio::test]
async fn claims_are_exclusive_until_the_lease_ends() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        for q in 1..=10 {
            create(&store, alice, &limit_order(q)).await;
        }
        let a = store.claim_outbox("relay-a", 4, LEASE).await.unwrap();
        assert_eq!(a.len(), 4);
        assert!(
            a.windows(2).all(|w| w[0].created_at <= w[1].created_at),
            "oldest first"
        );
        let b = store.claim_outbox("relay-b", 100, LEASE).await.unwrap();
        assert_eq!(b.len(), 6, "only what relay-a did not claim");
        let ids: HashSet<_> = a.iter().chain(&b).map(|o| o.id).collect();
        assert_eq!(ids.len(), 10);
        assert!(store
            .claim_outbox("relay-c", 100, LEASE)
            .await
            .unwrap()
            .is_empty());

        // A short lease ends: the rows are due again for anyone.
        let alice2 = create(&store, alice, &market_order()).await;
        let short = store
            .claim_outbox("relay-d", 100, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(short.iter().map(|o| o.id).collect::<Vec<_>>(), [alice2.id]);
        assert!(store
            .claim_outbox("relay-e", 100, LEASE)
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = store.claim_outbox("relay-e", 100, LEASE).await.unwrap();
        assert_eq!(again.iter().map(|o| o.id).collect::<Vec<_>>(), [alice2.id]);
        // The first claimer lost it: its failure report is ignored.
        let lost = store
            .record_failed_attempt(alice2.id, "relay-d", "timeout", Duration::ZERO, 20)
            .await
            .unwrap();
        assert_eq!(lost, AttemptOutcome::NotClaimed);
        assert_eq!(
            store.get_order(alice2.id).await.unwrap().unwrap().attempts,
            0
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_row() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        for q in 1..=60 {
            create(&store, alice, &limit_order(q)).await;
        }
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = store
                            .claim_outbox(&format!("w{i}"), 7, LEASE)
                            .await
                            .unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|o| o.id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 60, "every row claimed");
        assert_eq!(distinct.len(), 60, "no row claimed twice");
    })
    .await;
}

#[tokio::test]
async fn placing_ends_the_outbox_row_once() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let o = create(&store, alice, &limit_order(1)).await;
        store.claim_outbox("w", 10, LEASE).await.unwrap();
        let at = chrono::Utc::now();
        assert_eq!(store.mark_placed(o.id, at, false).await.unwrap(), Some(1));
        assert_eq!(
            store.mark_placed(o.id, at, true).await.unwrap(),
            None,
            "already placed"
        );
        let got = store.get_order(o.id).await.unwrap().unwrap();
        assert_eq!(got.status, OrderStatus::Placed);
        assert_eq!(got.attempts, 1);
        assert_eq!(
            got.placed_at.map(|t| t.timestamp_micros()),
            Some(at.timestamp_micros())
        );
        assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
        let evs = store.order_events(o.id).await.unwrap();
        assert_eq!(
            evs.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            [events::CREATED, events::PLACED]
        );
        assert_eq!(evs[1].data["attempt"], 1);
        assert_eq!(evs[1].data["duplicate"], false);
    })
    .await;
}

#[tokio::test]
async fn failed_attempts_back_off_then_fail_keeping_the_last_error() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let o = create(&store, alice, &limit_order(1)).await;
        assert_eq!(store.claim_outbox("w", 10, LEASE).await.unwrap().len(), 1);
        let r = store
            .record_failed_attempt(
                o.id,
                "w",
                "exchange unavailable (503)",
                Duration::from_secs(60),
                3,
            )
            .await
            .unwrap();
        assert_eq!(r, AttemptOutcome::Retry { attempts: 1 });
        assert!(
            store.claim_outbox("w", 10, LEASE).await.unwrap().is_empty(),
            "not due before its backoff"
        );
        assert_eq!(store.outbox_stats().await.unwrap().depth, 1);

        let o2 = create(&store, alice, &market_order()).await;
        for attempt in 1..=3 {
            let claimed = store.claim_outbox("w", 10, LEASE).await.unwrap();
            assert_eq!(claimed.iter().map(|o| o.id).collect::<Vec<_>>(), [o2.id]);
            let r = store
                .record_failed_attempt(o2.id, "w", &format!("error {attempt}"), Duration::ZERO, 3)
                .await
                .unwrap();
            if attempt < 3 {
                assert_eq!(r, AttemptOutcome::Retry { attempts: attempt });
            } else {
                assert_eq!(r, AttemptOutcome::Failed { attempts: 3 });
            }
        }
        let got = store.get_order(o2.id).await.unwrap().unwrap();
        assert_eq!(got.status, OrderStatus::Failed);
        assert_eq!(got.attempts, 3);
        assert_eq!(got.last_error.as_deref(), Some("error 3"));
        assert!(store.claim_outbox("w", 10, LEASE).await.unwrap().is_empty());
        let evs = store.order_events(o2.id).await.unwrap();
        assert_eq!(
            evs.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            [
                events::CREATED,
                events::PLACEMENT_FAILED,
                events::PLACEMENT_FAILED,
                events::PLACEMENT_FAILED,
                events::FAILED
            ]
        );
        assert_eq!(evs[1].data["attempt"], 1);
        assert_eq!(evs[1].data["error"], "error 1");
        assert!(evs[1].data["next_attempt_at"].is_string());
        assert!(
            evs[3].data["next_attempt_at"].is_null(),
            "no next attempt after the last"
        );
        assert_eq!(evs[4].data, json!({"attempts": 3, "error": "error 3"}));
        // Only the first order is still waiting.
        assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
    })
    .await;
}

#[tokio::test]
async fn events_are_published_once_in_order() {
    on_both(|store| async move {
        let alice = user(&store, "alice").await;
        let o = create(&store, alice, &limit_order(1)).await;
        store.claim_outbox("w", 10, LEASE).await.unwrap();
        store
            .mark_placed(o.id, chrono::Utc::now(), false)
            .await
            .unwrap();

        let batch = store.unpublished_events(100).await.unwrap().unwrap();
        let names: Vec<_> = batch.events.iter().map(|e| e.event.clone()).collect();
        assert_eq!(names, [events::CREATED, events::PLACED]);
        assert!(batch.events.iter().all(|e| e.order_id == o.id));
        if store.engine() == bourse_store::Engine::Postgres {
            // One publisher at a time.
            assert!(store.unpublished_events(100).await.unwrap().is_none());
        }
        let first = batch.events[0].id;
        batch.mark_published(&[first]).await.unwrap();
        let batch = store.unpublished_events(100).await.unwrap().unwrap();
        assert_eq!(
            batch.events.len(),
            1,
            "the unconfirmed event stays for the next round"
        );
        let ids: Vec<_> = batch.events.iter().map(|e| e.id).collect();
        batch.mark_published(&ids).await.unwrap();
        let batch = store.unpublished_events(100).await.unwrap().unwrap();
        assert!(batch.events.is_empty());
    })
    .await;
}
