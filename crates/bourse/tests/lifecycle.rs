//! Ending a user's access on running servers: `bourse user disable|enable|password|revoke-keys`
//! against Basic, JWT (`Bearer`) and API keys (`Token`), each ended within two seconds on every
//! replica: two replicas sharing PostgreSQL (woken by NOTIFY), one on SQLite (polling).

mod common;

use common::{basic, bin, create_user, database, issue_token, token, Engine, ServeSpec, Server};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the issue promises: a change is in force on every replica within this.
const LIMIT: Duration = Duration::from_secs(2);

on_both_engines! {
    disable_password_and_revoke_keys_end_access_everywhere => lifecycle;
}

/// Runs `bourse user ARGS…` against `url`, with `stdin` on its standard input.
fn user_cli(url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .arg("user")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOURSE_DATABASE_URL", url)
        .env("BOURSE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bourse user");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("bourse user output")
}

/// Runs a lifecycle command that must succeed; returns its stdout.
fn ok(url: &str, args: &[&str], stdin: &str) -> String {
    let out = user_cli(url, args, stdin);
    assert!(
        out.status.success(),
        "bourse user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The status of `GET /history` (a route that needs a user) with `auth`.
async fn status(server: &Server, auth: &str) -> u16 {
    server.get_auth("/history", auth).await.status().as_u16()
}

/// Every (replica, credential) status, in order.
async fn statuses(servers: &[Server], auths: &[&str]) -> Vec<u16> {
    let mut all = Vec::new();
    for server in servers {
        for auth in auths {
            all.push(status(server, auth).await);
        }
    }
    all
}

/// Asserts that every credential answers `want` on every replica within [`LIMIT`] from now (the
/// command that changed them has returned); returns how long it took. Each (replica, credential)
/// is asked again only until it answers `want`, so a password is refused once per replica.
async fn within_limit(servers: &[Server], auths: &[&str], want: u16, what: &str) -> Duration {
    let start = Instant::now();
    let mut pending: Vec<(&Server, &str)> = servers
        .iter()
        .flat_map(|s| auths.iter().map(move |a| (s, *a)))
        .collect();
    loop {
        let mut still = Vec::new();
        for (server, auth) in pending {
            let seen = status(server, auth).await;
            if seen != want {
                still.push((server, auth, seen));
            }
        }
        if still.is_empty() {
            let took = start.elapsed();
            eprintln!(
                "{what}: in force on {} replica(s) after {took:?}",
                servers.len()
            );
            return took;
        }
        let seen: Vec<u16> = still.iter().map(|p| p.2).collect();
        assert!(
            start.elapsed() < LIMIT,
            "{what}: still {seen:?} after {LIMIT:?} (want {want})"
        );
        pending = still.into_iter().map(|(s, a, _)| (s, a)).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the statuses right now (no waiting: what must keep working, or work at once).
async fn now(servers: &[Server], auths: &[&str], want: u16, what: &str) {
    let seen = statuses(servers, auths).await;
    assert!(seen.iter().all(|s| *s == want), "{what}: {seen:?}");
}

/// `POST /login` on `server`: the token when it answers 200, else the status.
async fn login(server: &Server, username: &str, password: &str) -> Result<String, u16> {
    let r = server
        .post_json(
            "/login",
            &json!({"username": username, "password": password}),
        )
        .await;
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let body: serde_json::Value = r.json().await.expect("JSON");
    Ok(body["token"].as_str().expect("token").to_string())
}

fn bearer(jwt: &str) -> String {
    format!("Bearer {jwt}")
}

async fn lifecycle(engine: Engine) {
    let db = database(engine).await;
    create_user(&db.url, "alice", "first-pw", false);
    create_user(&db.url, "bob", "bob-pw", false);
    let key = issue_token(&db.url, "alice");
    let spec = ServeSpec::embedded(&db);
    let replicas = match engine {
        Engine::Postgres => 2,
        Engine::Sqlite => 1,
    };
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(Server::start(&spec).await);
    }
    let (first, last) = (&servers[0], &servers[replicas - 1]);
    let alice_basic = basic("alice", "first-pw");
    let alice_key = token(&key);
    let jwt = bearer(&login(first, "alice", "first-pw").await.expect("login"));
    let bob = basic("bob", "bob-pw");
    // Every scheme works on every replica, and is now in each replica's credential cache.
    let all = [alice_basic.as_str(), alice_key.as_str(), jwt.as_str()];
    now(&servers, &all, 200, "before any change").await;

    // Disable: every scheme refused everywhere, /login too; another user is not affected.
    let out = ok(&db.url, &["disable", "--username", "alice"], "");
    assert!(out.contains("disabled alice"), "{out}");
    within_limit(&servers, &all, 401, "disable").await;
    assert_eq!(login(last, "alice", "first-pw").await, Err(401));
    now(&servers, &[&bob], 200, "another user").await;

    // Enable: the password and the key work again at once; the token ended by disable stays
    // ended, a new login works.
    ok(&db.url, &["enable", "--username", "alice"], "");
    within_limit(&servers, &[&alice_basic, &alice_key], 200, "enable").await;
    now(&servers, &[&jwt], 401, "a token from before disable").await;
    let jwt = bearer(&login(last, "alice", "first-pw").await.expect("login again"));
    now(&servers, &[&jwt], 200, "a token from after enable").await;

    // A new password from stdin (not a terminal): the old password and the token issued with it
    // end everywhere; the new password logs in; the API key is not a password and stays.
    let out = ok(
        &db.url,
        &["password", "--username", "alice"],
        "second-pw\nignored\n",
    );
    assert!(out.contains("new password for alice"), "{out}");
    within_limit(&servers, &[&alice_basic, &jwt], 401, "password").await;
    assert_eq!(login(first, "alice", "first-pw").await, Err(401));
    let second = basic("alice", "second-pw");
    now(
        &servers,
        &[&second, &alice_key],
        200,
        "new password, same key",
    )
    .await;
    let jwt = bearer(&login(first, "alice", "second-pw").await.expect("new login"));
    now(&servers, &[&jwt], 200, "a token for the new password").await;
    // --password works too.
    ok(
        &db.url,
        &["password", "--username", "alice", "--password", "third-pw"],
        "",
    );
    within_limit(&servers, &[&second, &jwt], 401, "password by flag").await;
    let third = basic("alice", "third-pw");
    now(&servers, &[&third], 200, "the third password").await;
    let jwt = bearer(&login(last, "alice", "third-pw").await.expect("third login"));

    // Revoke keys: the key ends everywhere; the password and the login token stay (no key can
    // be exchanged for a token); a new key works.
    let second_key = issue_token(&db.url, "alice");
    let out = ok(&db.url, &["revoke-keys", "--username", "alice"], "");
    assert!(out.contains("revoked 2 API key(s) of alice"), "{out}");
    let second_key = token(&second_key);
    within_limit(&servers, &[&alice_key, &second_key], 401, "revoke-keys").await;
    now(
        &servers,
        &[&third, &jwt, &bob],
        200,
        "password and token stay",
    )
    .await;
    let fresh = token(&issue_token(&db.url, "alice"));
    now(
        &servers,
        &[&fresh],
        200,
        "a key issued after the revocation",
    )
    .await;

    // Refusals: an unknown user, a too short password, an empty one from stdin.
    for (args, stdin, says) in [
        (vec!["disable", "--username", "ghost"], "", "ghost"),
        (
            vec!["password", "--username", "alice"],
            "abc\n",
            "at least 4",
        ),
        (vec!["password", "--username", "alice"], "", "at least 4"),
    ] {
        let out = user_cli(&db.url, &args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    now(&servers, &[&third], 200, "refused changes changed nothing").await;
    drop(servers);
    db.drop_db().await;
}

/// A notification can be lost (a listener reconnecting): the periodic check still ends access in
/// time. Here the change is written with SQL and no NOTIFY at all.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_without_notification_still_ends_access_in_time() {
    let db = database(Engine::Postgres).await;
    create_user(&db.url, "carol", "carol-pw", false);
    let server = Server::start(&ServeSpec::embedded(&db)).await;
    let servers = [server];
    let carol = basic("carol", "carol-pw");
    now(&servers, &[&carol], 200, "before").await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let mut tx = pool.begin().await.expect("begin");
    let id: uuid::Uuid =
        sqlx::query_scalar("UPDATE users SET active = false WHERE username = 'carol' RETURNING id")
            .fetch_one(&mut *tx)
            .await
            .expect("disable by hand");
    sqlx::query("INSERT INTO credential_changes (user_id, action) VALUES ($1, 'disable')")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("record by hand");
    tx.commit().await.expect("commit");
    within_limit(&servers, &[&carol], 401, "disable without NOTIFY").await;
    pool.close().await;
    drop(servers);
    db.drop_db().await;
}
