//! Quotes end to end: the real binary, a local fake stooq speaking the real CSV
//! format, JWT and Basic auth, history and stats; and the split deployment over the real
//! RabbitMQ, with the quote service as its own process.

mod common;

use bourse_quotes::fake::{FakeMode, FakeUpstream};
use common::{
    amqp_url, basic, create_user, database, unique, Engine, ServeSpec, Server, JWT_SECRET,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

on_both_engines! {
    quotes_history_and_stats => quotes_history_and_stats;
}

async fn login(server: &Server, user: &str, password: &str) -> reqwest::Response {
    server
        .http
        .post(server.url("/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("POST /login")
}

fn forge(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

async fn quotes_history_and_stats(engine: Engine) {
    let upstream = FakeUpstream::start().await.expect("fake stooq");
    let db = database(engine).await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_STOOQ_URL", upstream.url());
    let server = Server::start(&spec).await;
    create_user(&db.url, "admin", "adminpw", true);
    create_user(&db.url, "john", "johnpw", false);

    // Login: a JWT for good credentials, 401 otherwise.
    assert_eq!(login(&server, "admin", "nope").await.status(), 401);
    assert_eq!(login(&server, "ghost", "x").await.status(), 401);
    let r = server
        .http
        .post(server.url("/login"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let token: Value = login(&server, "admin", "adminpw")
        .await
        .json()
        .await
        .unwrap();
    let admin = format!("Bearer {}", token["token"].as_str().unwrap());
    let john = basic("john", "johnpw");

    // The quote, from the close field; exact decimals.
    let r = server.get_auth("/stock?q=aapl.us", &admin).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"symbol": "AAPL.US", "company_name": "APPLE", "quote": 189.79})
    );
    let r = server.get_auth("/api/v1/stock?q=AAPL.US", &john).await;
    assert_eq!(r.status(), 200, "Basic auth and the /api/v1 alias");
    let r = server.get_auth("/stock?q=t.us", &john).await;
    assert_eq!(r.json::<Value>().await.unwrap()["company_name"], "AT&T");
    assert_eq!(
        upstream.stooq_hits(),
        2,
        "the second aapl.us came from the cache"
    );

    // Errors: no credentials, missing q, unknown symbol, upstream trouble.
    let r = server.get("/stock?q=aapl.us").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(server.get_auth("/stock", &john).await.status(), 400);
    assert_eq!(server.get_auth("/stock?q=", &john).await.status(), 400);
    assert_eq!(
        server
            .get_auth("/stock?q=aapl.us&x=1", &john)
            .await
            .status(),
        400
    );
    let r = server.get_auth("/stock?q=appl.us", &john).await;
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());
    upstream.set_mode(FakeMode::Throttled);
    let r = server.get_auth("/stock?q=msft.us", &john).await;
    assert_eq!(r.status(), 503);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Exceeded the daily hits limit"));
    upstream.set_mode(FakeMode::ServerError);
    assert_eq!(
        server.get_auth("/stock?q=msft.us", &john).await.status(),
        502
    );
    upstream.set_mode(FakeMode::Garbage);
    assert_eq!(
        server.get_auth("/stock?q=msft.us", &john).await.status(),
        502
    );
    upstream.set_mode(FakeMode::Slow(Duration::from_secs(8)));
    let started = Instant::now();
    assert_eq!(
        server.get_auth("/stock?q=msft.us", &john).await.status(),
        504
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "gives up within the timeout"
    );
    upstream.set_mode(FakeMode::Normal);
    assert_eq!(
        server.get_auth("/stock?q=msft.us", &john).await.status(),
        200
    );

    // History: the caller's own successful requests, newest first.
    let history: Value = server.get_auth_json("/history", &john).await;
    let symbols: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(
        symbols,
        ["MSFT.US", "T.US", "AAPL.US"],
        "failed requests are not recorded"
    );
    let first = &history[2];
    assert_eq!(
        (
            &first["name"],
            &first["open"],
            &first["high"],
            &first["low"],
            &first["close"]
        ),
        (
            &json!("APPLE"),
            &json!(189.92),
            &json!(190.67),
            &json!(188.9),
            &json!(189.79)
        )
    );
    assert!(first["date"].as_str().unwrap().ends_with('Z'));
    let admin_history: Value = server.get_auth_json("/api/v1/users/history", &admin).await;
    assert_eq!(
        admin_history.as_array().unwrap().len(),
        1,
        "isolated between users"
    );
    // Pagination: limit and the Link cursor.
    let r = server.get_auth("/history?limit=2", &john).await;
    let link = r.headers()["link"].to_str().unwrap().to_string();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 2);
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let rest: Value = server.get_auth_json(next, &john).await;
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(rest[0]["symbol"], "AAPL.US");
    assert_eq!(
        server.get_auth("/history?limit=0", &john).await.status(),
        400
    );

    // Stats: admins only, most requested first.
    server.get_auth("/stock?q=t.us", &admin).await;
    server.get_auth("/stock?q=t.us", &admin).await;
    assert_eq!(server.get_auth("/stats", &john).await.status(), 403);
    let stats: Value = server.get_auth_json("/stats", &admin).await;
    assert_eq!(
        stats,
        json!([
            {"stock": "t.us", "times_requested": 3},
            {"stock": "aapl.us", "times_requested": 2},
            {"stock": "msft.us", "times_requested": 1},
        ])
    );

    // JWT: expired, tampered, foreign-signed and garbage tokens are refused.
    let sub = token_sub(token["token"].as_str().unwrap());
    let now = chrono::Utc::now().timestamp();
    let expired = forge(
        json!({"sub": sub, "username": "admin", "iat": now - 7200, "exp": now - 3600}),
        JWT_SECRET,
    );
    let foreign = forge(
        json!({"sub": sub, "username": "admin", "iat": now, "exp": now + 3600}),
        "another-secret-of-16+",
    );
    let valid = forge(
        json!({"sub": sub, "username": "admin", "iat": now, "exp": now + 3600}),
        JWT_SECRET,
    );
    assert_eq!(
        server
            .get_auth("/stats", &format!("Bearer {valid}"))
            .await
            .status(),
        200,
        "forging with our secret works"
    );
    let mut parts: Vec<String> = valid.split('.').map(String::from).collect();
    parts[1] = forge(
        json!({"sub": sub, "username": "x", "iat": now, "exp": now + 99999}),
        JWT_SECRET,
    )
    .split('.')
    .nth(1)
    .unwrap()
    .to_string();
    let tampered = parts.join(".");
    for bad in [expired, foreign, tampered, "not.a.jwt".to_string()] {
        assert_eq!(
            server
                .get_auth("/stats", &format!("Bearer {bad}"))
                .await
                .status(),
            401,
            "{bad}"
        );
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"bourse_quote_requests_total{provider="stooq",outcome="cache_hit"}"#),
        "{metrics}"
    );
    db.drop_db().await;
}

fn token_sub(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["sub"].as_str().unwrap().to_string()
}

fn quote_service_env(queue: &str, upstream: &str) -> Vec<(String, String)> {
    vec![
        ("BOURSE_AMQP_URL".into(), amqp_url()),
        ("BOURSE_QUOTE_QUEUE".into(), queue.into()),
        ("BOURSE_STOOQ_URL".into(), upstream.into()),
    ]
}

/// `serve` and `quote-service` as separate processes over the real RabbitMQ: a quote is
/// answered; with the quote service down a request fails within the 5 s timeout instead of
/// hanging; once it is back, requests succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn split_deployment_over_rabbitmq() {
    let upstream = FakeUpstream::start().await.expect("fake stooq");
    let db = database(Engine::Postgres).await;
    let queue = unique("bourse.quotes.test");
    let mut quote_service =
        Server::start_role("quote-service", &quote_service_env(&queue, &upstream.url())).await;
    let spec = ServeSpec::embedded(&db)
        .env("BOURSE_AMQP_URL", amqp_url())
        .env("BOURSE_QUOTE_QUEUE", queue.clone())
        .env("BOURSE_QUOTE_CACHE_SECS", "0");
    let server = Server::start(&spec).await;
    create_user(&db.url, "john", "johnpw", false);
    let john = basic("john", "johnpw");

    let r = server.get_auth("/stock?q=aapl.us", &john).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["quote"], 189.79);
    let r = server.get_auth("/stock?q=appl.us", &john).await;
    assert_eq!(r.status(), 404, "errors travel over RPC");

    quote_service.kill();
    let started = Instant::now();
    let status = server
        .get_auth("/stock?q=aapl.us", &john)
        .await
        .status()
        .as_u16();
    let waited = started.elapsed();
    assert!(status == 503 || status == 504, "status {status}");
    assert!(
        waited < Duration::from_secs(7),
        "failed after {waited:?}, not hanging"
    );

    let _quote_service =
        Server::start_role("quote-service", &quote_service_env(&queue, &upstream.url())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = server.get_auth("/stock?q=msft.us", &john).await;
        if r.status() == 200 {
            assert_eq!(r.json::<Value>().await.unwrap()["symbol"], "MSFT.US");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests did not recover: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history: Value = server.get_auth_json("/history", &john).await;
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "only the successful quotes are recorded"
    );
    db.drop_db().await;
}
