//! The throttle's rules, in memory (the Redis path is exercised by the black-box tests).
use super::*;

fn logins_with(per_account_address: u64, per_address: u64) -> Logins {
    Logins::new(
        Hashing::new(2, Duration::from_secs(5)),
        ThrottleConfig {
            per_account_address,
            per_address,
            ..ThrottleConfig::default()
        },
        None,
    )
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

#[tokio::test]
async fn refuses_past_the_limit_per_account_and_address() {
    let logins = logins_with(3, 100);
    for _ in 0..3 {
        let attempt = logins
            .begin(Scheme::Login, ip("192.0.2.1"), "alice")
            .await
            .unwrap();
        attempt.failed().await;
    }
    match logins.begin(Scheme::Login, ip("192.0.2.1"), "Alice").await {
        Err(ApiError::Throttled { retry_after }) => assert!((899..=900).contains(&retry_after)),
        _ => panic!("the fourth guess is throttled (usernames compared case-insensitively)"),
    }
    // The owner, elsewhere, is not locked out, and their success clears nothing of the guesser's.
    let owner = logins
        .begin(Scheme::Basic, ip("198.51.100.7"), "alice")
        .await
        .unwrap();
    owner.succeeded().await;
    assert!(logins
        .begin(Scheme::Login, ip("192.0.2.1"), "alice")
        .await
        .is_err());
}

#[tokio::test]
async fn only_failures_count() {
    // Right answers arriving together (a client's first burst) are all let through.
    let logins = logins_with(3, 3);
    let mut together = Vec::new();
    for _ in 0..10 {
        together.push(
            logins
                .begin(Scheme::Basic, ip("192.0.2.4"), "bob")
                .await
                .unwrap(),
        );
    }
    for attempt in together {
        attempt.succeeded().await;
    }
    let logins = logins_with(100, 2);
    for name in ["a", "b", "c", "d"] {
        let attempt = logins
            .begin(Scheme::Basic, ip("192.0.2.2"), name)
            .await
            .unwrap();
        attempt.succeeded().await;
    }
    for name in ["e", "f"] {
        logins
            .begin(Scheme::Basic, ip("192.0.2.2"), name)
            .await
            .unwrap()
            .failed()
            .await;
    }
    assert!(logins
        .begin(Scheme::Basic, ip("192.0.2.2"), "g")
        .await
        .is_err());
    assert!(logins
        .begin(Scheme::Basic, ip("192.0.2.3"), "g")
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_is_checked_once_at_a_time() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let logins = Arc::new(logins_with(10, 100));
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let checks: Vec<_> = (0..8)
        .map(|_| {
            let (logins, running, most) = (logins.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                logins
                    .one_at_a_time([7; 32], async {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            })
        })
        .collect();
    for check in checks {
        check.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 1);
    assert!(
        logins.in_flight.lock().unwrap().is_empty(),
        "nothing left behind"
    );
}

#[test]
fn log_names_are_escaped_and_short() {
    assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
    assert_eq!(printable(&"x".repeat(100)).len(), 64);
}
