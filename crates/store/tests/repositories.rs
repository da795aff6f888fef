//! Repository tests, each run against SQLite and against the local PostgreSQL.

use bourse_domain::{NewAnalysis, TargetType, Tick};
use bourse_store::feed::DeadLetter;
use bourse_store::testing::on_both;
use bourse_store::users::{NewUser, Role};
use bourse_store::StoreError;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::str::FromStr;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2019, 12, 15, 14, 36, 33).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn tick(id: Uuid, name: &str, price: &str, secs: i64) -> Tick {
    Tick {
        stock_id: id,
        name: name.into(),
        price: dec(price),
        availability: 10 + secs,
        timestamp: t0() + Duration::seconds(secs),
    }
}

#[tokio::test]
async fn ingest_keeps_latest_price_and_history() {
    on_both(|store| async move {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let out = store
            .ingest(
                &[
                    tick(a, "CIB", "28", 0),
                    tick(a, "CIB", "28.5", 2),
                    tick(b, "Edita", "11.25", 1),
                ],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(out.new_ticks.len(), 3);
        let stocks = store.list_stocks().await.unwrap();
        assert_eq!(stocks.len(), 2);
        assert_eq!(stocks[0].name, "CIB", "ordered by name");
        assert_eq!(stocks[0].price, dec("28.5"));
        assert_eq!(stocks[0].availability, 12);
        assert_eq!(stocks[1].price, dec("11.25"));

        // An older tick arriving late is stored but does not move the latest price back.
        let out = store
            .ingest(&[tick(a, "CIB", "1", 1)], &[], Utc::now())
            .await
            .unwrap();
        assert_eq!(out.new_ticks.len(), 1);
        let detail = store.get_stock(a).await.unwrap().unwrap();
        assert_eq!(detail.stock.price, dec("28.5"));
        assert!(detail.analysis.is_none());

        // A duplicate (same stock and timestamp) is ignored, within and across batches.
        let out = store
            .ingest(
                &[
                    tick(a, "CIB", "99", 2),
                    tick(b, "Edita", "12", 5),
                    tick(b, "Edita", "13", 5),
                ],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(out.new_ticks.len(), 1);
        assert_eq!(
            store.get_stock(a).await.unwrap().unwrap().stock.price,
            dec("28.5")
        );
        assert_eq!(
            store.get_stock(b).await.unwrap().unwrap().stock.price,
            dec("12")
        );

        let history = store.ticks(a, None, None, 100).await.unwrap();
        let prices: Vec<String> = history
            .iter()
            .map(|t| t.price.normalize().to_string())
            .collect();
        assert_eq!(prices, ["28.5", "1", "28"], "newest first");
        let window = store
            .ticks(
                a,
                Some(t0() + Duration::seconds(1)),
                Some(t0() + Duration::seconds(1)),
                100,
            )
            .await
            .unwrap();
        assert_eq!(window.len(), 1, "bounds are inclusive");
        assert_eq!(
            store.ticks(a, None, None, 2).await.unwrap().len(),
            2,
            "limit"
        );
        assert!(store.get_stock(Uuid::new_v4()).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn targets_flip_once_and_stay() {
    on_both(|store| async move {
        let up = Uuid::new_v4();
        let down = Uuid::new_v4();
        store
            .ingest(
                &[tick(up, "UPCO", "10", 0), tick(down, "DOWNCO", "10", 0)],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        let a = store
            .set_analysis(
                up,
                NewAnalysis {
                    target: dec("12"),
                    kind: TargetType::Up,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!a.target_hit);
        let d = store
            .set_analysis(
                down,
                NewAnalysis {
                    target: dec("9"),
                    kind: TargetType::Down,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!d.target_hit);

        let out = store
            .ingest(
                &[
                    tick(up, "UPCO", "11.99", 1),
                    tick(down, "DOWNCO", "9.01", 1),
                ],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        assert!(out.hits.is_empty());

        // Equality counts; within a batch, a passing touch counts even if the price moves away.
        let out = store
            .ingest(
                &[
                    tick(up, "UPCO", "12", 2),
                    tick(up, "UPCO", "11", 3),
                    tick(down, "DOWNCO", "9", 2),
                ],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(out.hits.len(), 2);
        let hit_up = out.hits.iter().find(|h| h.stock_id == up).unwrap();
        assert_eq!(hit_up.price, dec("12"));
        assert_eq!(hit_up.timestamp, t0() + Duration::seconds(2));

        // Sticky: moving away does not reset, and no second hit is reported.
        let out = store
            .ingest(
                &[tick(up, "UPCO", "1", 4), tick(up, "UPCO", "50", 5)],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        assert!(out.hits.is_empty());
        let detail = store.get_stock(up).await.unwrap().unwrap();
        assert!(detail.analysis.unwrap().target_hit);

        // A new analysis replaces the old one and is judged against the current price (50).
        let a = store
            .set_analysis(
                up,
                NewAnalysis {
                    target: dec("60"),
                    kind: TargetType::Up,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!a.target_hit);
        let a = store
            .set_analysis(
                up,
                NewAnalysis {
                    target: dec("50"),
                    kind: TargetType::Up,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(a.target_hit, "immediate evaluation, equality included");
        let detail = store
            .get_stock(up)
            .await
            .unwrap()
            .unwrap()
            .analysis
            .unwrap();
        assert_eq!(
            (detail.target, detail.kind, detail.target_hit),
            (dec("50"), TargetType::Up, true)
        );

        assert!(store
            .set_analysis(
                Uuid::new_v4(),
                NewAnalysis {
                    target: dec("1"),
                    kind: TargetType::Up
                }
            )
            .await
            .unwrap()
            .is_none());
    })
    .await;
}

#[tokio::test]
async fn dead_letters_are_kept_with_their_bytes() {
    on_both(|store| async move {
        let dead = DeadLetter {
            source: "mqtt:thndr-trading".into(),
            payload: vec![0xff, b'x'],
            reason: "syntax".into(),
            received_at: Utc::now(),
        };
        store
            .ingest(&[], &[dead.clone(), dead], Utc::now())
            .await
            .unwrap();
        assert_eq!(store.dead_letter_count().await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn users_are_unique_by_username_and_email() {
    on_both(|store| async move {
        let new = NewUser {
            username: "alice".into(),
            email: Some("Alice@Example.com".into()),
            first_name: None,
            last_name: None,
            password_hash: Some("hash".into()),
            role: Role::Admin,
        };
        let user = store.create_user(&new).await.unwrap();
        let creds = store
            .credentials_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(creds.user, user);
        assert_eq!(creds.password_hash.as_deref(), Some("hash"));
        assert_eq!(
            store.user_by_id(user.id).await.unwrap().unwrap().role,
            Role::Admin
        );
        assert!(store
            .credentials_by_username("bob")
            .await
            .unwrap()
            .is_none());

        let dup_name = store.create_user(&new).await.unwrap_err();
        assert!(matches!(dup_name, StoreError::Conflict(_)), "{dup_name}");
        let dup_email = NewUser {
            username: "alice2".into(),
            email: Some("alice@EXAMPLE.com".into()),
            ..new
        };
        let err = store.create_user(&dup_email).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert_eq!(store.count_users().await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn quote_history_is_per_user_newest_first_and_counted() {
    use bourse_store::quotes::QuoteRecord;
    on_both(|store| async move {
        let mk = |name: &str| NewUser {
            username: name.into(),
            email: None,
            first_name: None,
            last_name: None,
            password_hash: None,
            role: Role::User,
        };
        let alice = store.create_user(&mk("alice")).await.unwrap();
        let bob = store.create_user(&mk("bob")).await.unwrap();
        let at = Utc::now();
        let rec = |code: &str, close: &str| QuoteRecord {
            code: code.into(),
            symbol: code.to_uppercase(),
            name: "NAME".into(),
            open: dec("1.10"),
            high: dec("2"),
            low: dec("0.5"),
            close: dec(close),
            requested_at: at,
        };
        for (user, code, close) in [
            (alice.id, "aapl.us", "1"),
            (alice.id, "msft.us", "2"),
            (alice.id, "aapl.us", "3"),
            (bob.id, "aapl.us", "4"),
            (bob.id, "t.us", "5"),
        ] {
            store.record_quote(user, &rec(code, close)).await.unwrap();
        }
        let history = store.quote_history(alice.id, None, 10).await.unwrap();
        let closes: Vec<String> = history.iter().map(|h| h.record.close.to_string()).collect();
        assert_eq!(
            closes,
            ["3", "2", "1"],
            "same instant: newest recorded first"
        );
        assert_eq!(history[0].record.open, dec("1.10"));
        let page = store
            .quote_history(alice.id, Some(history[0].id), 1)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].record.close, dec("2"));
        assert_eq!(
            store.quote_history(bob.id, None, 10).await.unwrap().len(),
            2,
            "isolated"
        );
        let top = store.top_requested(5).await.unwrap();
        assert_eq!(
            top,
            [
                ("aapl.us".to_string(), 3),
                ("msft.us".to_string(), 1),
                ("t.us".to_string(), 1)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn stocks_list_with_their_analyses_in_one_query() {
    on_both(|store| async move {
        let (cib, edita) = (Uuid::new_v4(), Uuid::new_v4());
        store
            .ingest(
                &[tick(edita, "Edita", "19.5", 0), tick(cib, "CIB", "28", 1)],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        let set = store
            .set_analysis(
                edita,
                NewAnalysis {
                    target: dec("19"),
                    kind: TargetType::Down,
                },
            )
            .await
            .unwrap()
            .unwrap();

        let all = store.list_stocks_with_analysis().await.unwrap();
        let names: Vec<&str> = all.iter().map(|d| d.stock.name.as_str()).collect();
        assert_eq!(names, ["CIB", "Edita"], "ordered by name like list_stocks");
        assert_eq!(all[0].stock.stock_id, cib);
        assert_eq!(all[0].stock.price, dec("28"));
        assert_eq!(all[0].analysis, None);
        assert_eq!(all[1].analysis, Some(set));
        assert_eq!(set.target, dec("19"));
        assert!(!set.target_hit);
        // Each row is what get_stock answers for that stock.
        for detail in &all {
            let one = store.get_stock(detail.stock.stock_id).await.unwrap();
            assert_eq!(one.as_ref(), Some(detail));
        }
    })
    .await;
}
