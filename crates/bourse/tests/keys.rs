//! API keys end to end: `POST /register` as JSON and as forms, emails unique
//! case-insensitively, field validation, `Authorization: Token`, `bourse user token`, and keys
//! stored only as hashes; on SQLite and PostgreSQL.

mod common;

use bourse_quotes::fake::FakeUpstream;
use common::{
    basic, create_user, database, issue_token, register, token, Engine, ServeSpec, Server,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::Command;

on_both_engines! {
    register_and_use_api_keys => register_and_use_api_keys;
}

/// The fields of a registration form.
fn person<'a>(name: &'a str, last_name: &'a str, email: &'a str) -> [(&'a str, &'a str); 3] {
    [("name", name), ("last_name", last_name), ("email", email)]
}

/// The key of a 201 answer of `POST /register`.
async fn key_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("JSON");
    body["token"].as_str().expect("token").to_string()
}

async fn symbol_status(server: &Server, auth: &str) -> u16 {
    server.get_auth("/symbol/ibm", auth).await.status().as_u16()
}

/// The key hashes as stored, read with SQL (not through the application).
async fn stored_key_hashes(url: &str) -> Vec<String> {
    // The same steps on either engine's pool type.
    macro_rules! select {
        ($pool:ty) => {{
            let pool = <$pool>::connect(url).await.expect("connect");
            let rows = sqlx::query_scalar::<_, String>("SELECT key_hash FROM api_keys")
                .fetch_all(&pool)
                .await
                .expect("SELECT");
            pool.close().await;
            rows
        }};
    }
    if url.starts_with("postgres") {
        select!(sqlx::PgPool)
    } else {
        select!(sqlx::SqlitePool)
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn register_and_use_api_keys(engine: Engine) {
    let upstream = FakeUpstream::start().await.expect("fake AlphaVantage");
    let db = database(engine).await;
    let spec = ServeSpec::embedded(&db).env("BOURSE_ALPHAVANTAGE_URL", upstream.url());
    let server = Server::start(&spec).await;

    // JSON: 201, the key once, never cached.
    let r = server
        .post_json(
            "/register",
            &json!({"name": "Dave", "last_name": "Mustaine", "email": "Dave@Example.com"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{body}");
    let dave = body["token"].as_str().expect("token").to_string();
    assert_eq!(dave.len(), 64, "256 bits in hex: {dave}");
    assert!(dave.bytes().all(|b| b.is_ascii_hexdigit()));

    // The key works; a wrong or malformed one is 401 with a challenge naming Token.
    assert_eq!(symbol_status(&server, &token(&dave)).await, 200);
    assert_eq!(symbol_status(&server, &format!("token {dave}")).await, 200);
    let mut wrong = dave.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    for bad in [
        token(&wrong),
        token("nope"),
        token(&dave.to_uppercase()),
        "Token".into(),
    ] {
        let r = server.get_auth("/symbol/ibm", &bad).await;
        assert_eq!(r.status(), 401, "{bad}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("Token"), "{challenge}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], body["detail"]);
    }
    assert_eq!(server.get("/symbol/ibm").await.status(), 401);

    // A case variant of a registered email is a 409, as JSON or as a form.
    let r = server
        .post_json(
            "/register",
            &json!({"name": "D", "last_name": "M", "email": "dave@EXAMPLE.com"}),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());
    let r = server
        .post_form("/api/v1/register/", &person("D", "M", "DAVE@example.COM"))
        .await;
    assert_eq!(r.status(), 409);

    // Forms: urlencoded, and multipart as with `curl --form`, at the DRF-style path.
    let r = server
        .post_form(
            "/register",
            &person("Marty", "Friedman", "marty@example.com"),
        )
        .await;
    assert_eq!(r.status(), 201);
    let marty = key_of(r).await;
    let form = reqwest::multipart::Form::new()
        .text("name", "Dave")
        .text("last_name", "Ellefson")
        .text("email", "examplemail@email.com");
    let r = server
        .http
        .post(server.url("/api/v1/register/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let ellefson = key_of(r).await;
    assert_ne!(marty, ellefson);
    assert_eq!(symbol_status(&server, &token(&marty)).await, 200);
    assert_eq!(symbol_status(&server, &token(&ellefson)).await, 200);

    // 422 names every bad field; malformed bodies are 400.
    let r = server
        .post_json("/register", &json!({"name": "", "email": "nope"}))
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "last_name", "email"], "{body}");
    let r = server
        .post_form("/register", &person("A", "B", "a@b"))
        .await;
    assert_eq!(r.status(), 422);
    let r = server.post_raw("/register", "application/json", "{").await;
    assert_eq!(r.status(), 400);
    let r = server
        .post_raw("/register", "text/plain", "name=Dave")
        .await;
    assert_eq!(r.status(), 400);

    // Registered users have no password: /login and Basic refuse them.
    let r = server
        .post_json(
            "/login",
            &json!({"username": "dave@example.com", "password": ""}),
        )
        .await;
    assert_eq!(r.status(), 401);

    // `bourse user token`: a new key for the same user (the username is the email, lowercased);
    // earlier keys keep working. CLI users get keys too.
    let second = issue_token(&db.url, "dave@example.com");
    assert_ne!(second, dave);
    assert_eq!(symbol_status(&server, &token(&second)).await, 200);
    assert_eq!(symbol_status(&server, &token(&dave)).await, 200);
    create_user(&db.url, "john", "johnpw", false);
    let john = issue_token(&db.url, "john");
    assert_eq!(symbol_status(&server, &token(&john)).await, 200);
    assert_eq!(symbol_status(&server, &basic("john", "johnpw")).await, 200);
    let out = Command::new(common::bin())
        .args(["user", "token", "--username", "ghost"])
        .env("BOURSE_DATABASE_URL", &db.url)
        .env("BOURSE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no key printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));

    // Only hashes are stored: SHA-256 of each key, never a key.
    let stored = stored_key_hashes(&db.url).await;
    let keys = [&dave, &marty, &ellefson, &second, &john];
    assert_eq!(stored.len(), keys.len(), "{stored:?}");
    for key in keys {
        assert!(stored.contains(&sha256_hex(key)), "hash of {key} stored");
        assert!(!stored.contains(key), "{key} stored in clear");
    }
    // The docs describe both routes and the Token scheme.
    let doc = server.get_json("/openapi.json").await;
    for path in ["/register", "/symbol/{symbol}"] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["name"],
        "Authorization"
    );
    // A key registered via the helper works at once too.
    let other = register(&server, "other@example.com").await;
    assert_eq!(symbol_status(&server, &token(&other)).await, 200);
    db.drop_db().await;
}
