//! Secrets never reach the output, and demo credentials exist only on loopback. Against the real
//! binary: known secrets are configured, every failing path that could carry them is taken, and
//! the whole output is searched for them.

mod attack;
mod common;

use attack::*;
use common::*;
use std::process::Command;

const AV_KEY: &str = "av-key-SECRET-7f3a91";
const JWT: &str = "jwt-secret-SECRET-9b1c0d2e";
const PASSWORD: &str = "alice-pw-SECRET-5e0c";
const WRONG: &str = "wrong-pw-SECRET-6d11";
const REDIS_PW: &str = "redis-pw-SECRET-41aa";
const AMQP_PW: &str = "amqp-pw-SECRET-8c2f";
const DB_PW: &str = "db-pw-SECRET-3b7e";

fn assert_no_secret(output: &str, what: &str) {
    for secret in [AV_KEY, JWT, PASSWORD, WRONG, REDIS_PW, AMQP_PW, DB_PW] {
        assert!(
            !output.contains(secret),
            "{what}: {secret} in the output:\n{output}"
        );
    }
}

/// Debug logging, an unreachable AlphaVantage and Redis (quotas on), wrong and right passwords
/// by `/login` and Basic, a JWT; then an unreachable RabbitMQ; then a database that refuses.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_output() {
    let db = database(Engine::Sqlite).await;
    let scratch = Scratch::new();
    let closed = free_port();
    create_user(&db.url, "alice", PASSWORD, false);
    let log = scratch.file("serve.log");
    let spec = logged(ServeSpec::embedded(&db), log.clone())
        .env("BOURSE_LOG", "debug")
        .env("BOURSE_JWT_SECRET", JWT)
        .env("BOURSE_ALPHAVANTAGE_KEY", AV_KEY)
        .env(
            "BOURSE_ALPHAVANTAGE_URL",
            format!("http://127.0.0.1:{closed}"),
        )
        .env(
            "BOURSE_REDIS_URL",
            format!("redis://:{REDIS_PW}@127.0.0.1:{closed}"),
        )
        .env("BOURSE_QUOTA_USER_PER_DAY", "1000")
        .env("BOURSE_QUOTA_ANON_PER_DAY", "1000");
    let mut server = Server::start(&spec).await;
    // The proxy header is not trusted here: every request is from 127.0.0.1.
    for _ in 0..3 {
        assert_eq!(login_from(&server, "alice", WRONG, "-").await.status(), 401);
        assert_eq!(basic_from(&server, "alice", WRONG, "-").await.status(), 401);
    }
    let r = login_from(&server, "alice", PASSWORD, "-").await;
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    assert_eq!(server.get_auth("/history", &bearer).await.status(), 200);
    let r = server
        .get_auth("/symbol/IBM", &basic("alice", PASSWORD))
        .await;
    assert!(
        r.status().is_server_error(),
        "AlphaVantage is unreachable: {}",
        r.status()
    );
    wait_for_output(&log, "upstream request failed").await;
    assert!(server.terminate().success());
    let text = output(&log);
    assert!(
        text.contains("failed login"),
        "the failing paths ran:\n{text}"
    );
    assert!(
        text.contains("127.0.0.1"),
        "redacted, not silenced:\n{text}"
    );
    assert_no_secret(&text, "serve, debug");

    // RabbitMQ unreachable: the quote RPC fails.
    let log = scratch.file("amqp.log");
    let spec = logged(ServeSpec::embedded(&db), log.clone())
        .env("BOURSE_LOG", "debug")
        .env(
            "BOURSE_AMQP_URL",
            format!("amqp://guest:{AMQP_PW}@127.0.0.1:{closed}/%2f"),
        );
    let mut server = Server::start(&spec).await;
    let r = server
        .get_auth("/stock?q=aapl.us", &basic("alice", PASSWORD))
        .await;
    assert!(
        r.status().is_server_error(),
        "RabbitMQ is unreachable: {}",
        r.status()
    );
    assert!(server.terminate().success());
    assert_no_secret(&output(&log), "serve with RabbitMQ down");

    // A database that cannot be reached: serve stops with an error naming it, redacted.
    let out = Command::new(bin())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOURSE_LOG", "debug")
        .env("BOURSE_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("BOURSE_JWT_SECRET", JWT)
        .env(
            "BOURSE_DATABASE_URL",
            format!("postgres://postgres:{DB_PW}@127.0.0.1:{closed}/bourse"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("postgres://postgres:***@"), "{text}");
    assert_no_secret(&text, "serve with the database down");
}

/// Starts the embedded defaults (no database configured, demo on) listening on `host`, in a
/// directory of its own; answers whether `admin/admin` logs in.
async fn demo_admin_logs_in(host: &str) -> (bool, String) {
    let scratch = Scratch::new();
    let log = scratch.file("serve.log");
    let options = common::RoleOptions {
        output: Some(log.clone()),
        dir: Some(scratch.0.clone()),
        host: Some(host.into()),
        ..common::RoleOptions::default()
    };
    let env = [("BOURSE_LOG".to_string(), "info".to_string())];
    let server = Server::start_role_with("serve", &env, &options).await;
    let status = |user: &'static str, password: &'static str| {
        let server = &server;
        async move {
            server
                .post_json(
                    "/login",
                    &serde_json::json!({"username": user, "password": password}),
                )
                .await
                .status()
        }
    };
    let admin = status("admin", "admin").await;
    let john = status("johndoe", "john").await;
    assert_eq!(admin, john, "both demo users or neither");
    (admin == 200, output(&log))
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_users_only_on_loopback() {
    let (on_loopback, _) = demo_admin_logs_in("127.0.0.1").await;
    assert!(on_loopback, "the laptop demo keeps admin/admin");
    let (beyond, log) = demo_admin_logs_in("0.0.0.0").await;
    assert!(!beyond, "admin/admin on 0.0.0.0");
    assert!(log.contains("no demo users"), "{log}");
}
