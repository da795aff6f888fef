//! Password guessing is throttled, for Basic and `/login` alike, per (account, address) and per
//! address, before any hash; shared by replicas through Redis. Against the real binary. Client
//! addresses come from `X-Forwarded-For`, which these servers trust.

mod attack;
mod common;

use attack::*;
use common::*;

fn throttled_spec(db: &bourse_store::testing::TestDb, log: std::path::PathBuf) -> ServeSpec {
    logged(
        ServeSpec::embedded(db).env("BOURSE_TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
        log,
    )
}

/// Ten wrong guesses for one account from one address are 401; the eleventh is 429 even with
/// the right password, and costs no hash. The owner, from another address, still logs in, and
/// that success does not give the guesser its guesses back. Same for Basic.
async fn guesses_are_throttled_for_both_schemes(engine: Engine) {
    let db = database(engine).await;
    let scratch = Scratch::new();
    let log = scratch.file("serve.log");
    let server = Server::start(&throttled_spec(&db, log.clone())).await;
    create_user(&db.url, "victim", "correct horse", false);
    create_user(&db.url, "other", "battery staple", false);
    let attacker = "203.0.113.66";

    for i in 0..10 {
        let r = login_from(&server, "victim", &format!("guess-{i}"), attacker).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let hashes = metric(&server, "bourse_password_hashes_total", &[]).await;
    assert_throttled(
        login_from(&server, "victim", "guess-10", attacker).await,
        900,
        "11th /login",
    )
    .await;
    assert_throttled(
        login_from(&server, "VICTIM", "correct horse", attacker).await,
        900,
        "the right password, too late",
    )
    .await;
    assert_eq!(
        metric(&server, "bourse_password_hashes_total", &[]).await,
        hashes,
        "throttled attempts compute no hash"
    );
    // The owner elsewhere is not locked out; the guesser stays throttled.
    let r = login_from(&server, "victim", "correct horse", "198.51.100.7").await;
    assert_eq!(r.status(), 200, "the owner from their own address");
    assert_eq!(
        login_from(&server, "victim", "correct horse", attacker)
            .await
            .status(),
        429
    );

    // Basic: the same, for another account (the address is far from its own limit).
    for i in 0..10 {
        let r = basic_from(&server, "other", &format!("guess-{i}"), attacker).await;
        assert_eq!(r.status(), 401, "Basic guess {i}");
    }
    assert_throttled(
        basic_from(&server, "other", "battery staple", attacker).await,
        900,
        "11th Basic",
    )
    .await;
    let r = basic_from(&server, "other", "battery staple", "198.51.100.8").await;
    assert_eq!(r.status(), 200, "Basic from the owner's address");

    assert_eq!(
        metric(
            &server,
            "bourse_login_failures_total",
            &["scheme=\"login\""]
        )
        .await,
        10.0
    );
    assert_eq!(
        metric(
            &server,
            "bourse_login_failures_total",
            &["scheme=\"basic\""]
        )
        .await,
        10.0
    );
    assert!(
        metric(
            &server,
            "bourse_login_throttled_total",
            &["limit=\"account_address\""]
        )
        .await
            >= 4.0
    );
    // Failed logins are logged with the (escaped) username and address, never the password.
    let text = wait_for_output(&log, "login throttled").await;
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("failed login"))
        .collect();
    assert_eq!(failed.len(), 20, "{text}");
    assert!(failed.iter().all(|l| l.contains(attacker)), "{failed:?}");
    assert!(failed.iter().any(|l| l.contains("victim")));
    assert!(!text.contains("guess-"), "a password in the log:\n{text}");
    assert!(!text.contains("correct horse") && !text.contains("battery staple"));
}

/// One address spraying many accounts is stopped by the per-address limit.
async fn one_address_spraying_accounts_is_throttled(engine: Engine) {
    let db = database(engine).await;
    let scratch = Scratch::new();
    let spec = limit(throttled_spec(&db, scratch.file("serve.log")), "ADDRESS", 5);
    let server = Server::start(&spec).await;
    let sprayer = "192.0.2.99";
    for i in 0..5 {
        let r = login_from(&server, &format!("user-{i}"), "123456", sprayer).await;
        assert_eq!(r.status(), 401);
    }
    assert_throttled(
        basic_from(&server, "user-5", "123456", sprayer).await,
        900,
        "the 6th account, by Basic",
    )
    .await;
    let r = login_from(&server, "user-5", "123456", "192.0.2.100").await;
    assert_eq!(r.status(), 401, "another address is not throttled");
}

on_both_engines! {
    throttled_guesses => guesses_are_throttled_for_both_schemes;
    throttled_spraying => one_address_spraying_accounts_is_throttled;
}

/// Two replicas sharing PostgreSQL and Redis share the counts: five guesses at each, and the
/// next is refused at both.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_the_counts_through_redis() {
    let db = database(Engine::Postgres).await;
    let scratch = Scratch::new();
    let prefix = format!("{}:", unique("bourse-test-login"));
    let spec = |name: &str| {
        throttled_spec(&db, scratch.file(name))
            .env("BOURSE_REDIS_URL", redis_url())
            .env("BOURSE_LOGIN_REDIS_PREFIX", prefix.clone())
    };
    let a = Server::start(&spec("a.log")).await;
    let b = Server::start(&spec("b.log")).await;
    create_user(&db.url, "shared", "right", false);
    let attacker = "203.0.113.77";
    for i in 0..5 {
        assert_eq!(
            login_from(&a, "shared", &format!("a{i}"), attacker)
                .await
                .status(),
            401
        );
        assert_eq!(
            basic_from(&b, "shared", &format!("b{i}"), attacker)
                .await
                .status(),
            401
        );
    }
    assert_throttled(login_from(&a, "shared", "a5", attacker).await, 900, "at A").await;
    assert_throttled(basic_from(&b, "shared", "b5", attacker).await, 900, "at B").await;
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the counts live in Redis");
    assert!(
        keys.iter().all(|k| !k.contains("shared")),
        "keys carry no username: {keys:?}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// A Redis that accepts connections and never answers (a hung server, a black-holed route) costs
/// the password checks one response timeout a second, not two per guess, and the replica still
/// throttles on its own counts: the eleventh guess is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_redis_does_not_slow_every_guess() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redis = format!("redis://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let db = database(Engine::Sqlite).await;
    let scratch = Scratch::new();
    let spec = throttled_spec(&db, scratch.file("serve.log"))
        .env("BOURSE_REDIS_URL", redis)
        .env("BOURSE_QUOTA_ANON_PER_DAY", "0")
        .env("BOURSE_QUOTA_USER_PER_DAY", "0");
    let server = Server::start(&spec).await;
    create_user(&db.url, "target", "right", false);
    let attacker = "203.0.113.88";
    let started = std::time::Instant::now();
    for i in 0..10 {
        let r = login_from(&server, "target", &format!("g{i}"), attacker).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let elapsed = started.elapsed();
    // Asking Redis on each check would take at least 10 x 2 x 500 ms.
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "ten guesses took {elapsed:?} against a silent Redis"
    );
    assert_throttled(
        login_from(&server, "target", "g10", attacker).await,
        900,
        "11th, counted in memory",
    )
    .await;
    held.abort();
}
