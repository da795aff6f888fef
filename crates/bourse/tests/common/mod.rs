//! Black-box harness: runs the real `bourse` binary on a random port against a throw-away
//! database and the local Mosquitto, and talks to it over HTTP and MQTT like any client would.

#![allow(dead_code)] // each test binary uses a different part of the harness

use bourse_store::testing::TestDb;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The services the tests talk to: `BOURSE_TEST_*_URL` when set, else the local ones that
/// `deploy/dev-services` starts (PostgreSQL's is read in `bourse_store::testing`).
pub fn mqtt_url() -> String {
    std::env::var("BOURSE_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}
pub fn amqp_url() -> String {
    std::env::var("BOURSE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
pub fn redis_url() -> String {
    std::env::var("BOURSE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
/// The JWT secret every spawned server uses, so tests can forge expired or foreign tokens.
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef";

#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub async fn database(engine: Engine) -> TestDb {
    match engine {
        Engine::Sqlite => TestDb::sqlite(),
        Engine::Postgres => TestDb::postgres().await,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// How a spawned server is set up. The topic and client id are kept so that a restarted server
/// resumes the same persistent MQTT session.
#[derive(Clone)]
pub struct ServeSpec {
    pub database_url: String,
    pub topic: Option<String>,
    pub client_id: String,
    pub extra_env: Vec<(String, String)>,
    /// Where the server's output goes (stdout and stderr); unset: stderr shows in the test's.
    pub output: Option<PathBuf>,
}

impl ServeSpec {
    pub fn mqtt(db: &TestDb) -> ServeSpec {
        ServeSpec {
            database_url: db.url.clone(),
            topic: Some(unique("test-trading")),
            client_id: unique("bourse-test"),
            extra_env: Vec::new(),
            output: None,
        }
    }

    /// No broker: the in-process simulated feed runs.
    pub fn embedded(db: &TestDb) -> ServeSpec {
        ServeSpec {
            database_url: db.url.clone(),
            topic: None,
            client_id: unique("bourse-test"),
            extra_env: Vec::new(),
            output: None,
        }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> ServeSpec {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    pub fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or("thndr-trading")
    }

    /// The environment `bourse serve` runs with for this spec.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("BOURSE_DATABASE_URL".into(), self.database_url.clone()),
            ("BOURSE_DEMO".into(), "false".into()),
            ("BOURSE_MQTT_CLIENT_ID".into(), self.client_id.clone()),
            ("BOURSE_JWT_SECRET".into(), JWT_SECRET.into()),
            // Quotas and the request log are off unless a test turns them on (`.env(..)` wins).
            ("BOURSE_QUOTA_ANON_PER_DAY".into(), "0".into()),
            ("BOURSE_QUOTA_USER_PER_DAY".into(), "0".into()),
            ("BOURSE_REQUEST_LOG".into(), String::new()),
            // Tests date their ticks years back; the retention tests turn retention on.
            ("BOURSE_TICK_RETENTION_DAYS".into(), "0".into()),
        ];
        if let Some(topic) = &self.topic {
            env.push(("BOURSE_MQTT_URL".into(), mqtt_url()));
            env.push(("BOURSE_MQTT_TOPIC".into(), topic.clone()));
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }
}

pub struct Server {
    pub base: String,
    pub child: Child,
    pub http: reqwest::Client,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bourse")
}

impl Server {
    /// Starts `bourse serve` and waits until `/readyz` answers 200 (database up, MQTT
    /// subscription acknowledged).
    pub async fn start(spec: &ServeSpec) -> Server {
        let options = RoleOptions {
            output: spec.output.clone(),
            ..RoleOptions::default()
        };
        Server::start_role_with("serve", &spec.vars(), &options).await
    }

    /// Starts any role of the binary on a free port with `env` (and nothing else from the
    /// environment but PATH), and waits for its `/readyz`.
    pub async fn start_role(role: &str, env: &[(String, String)]) -> Server {
        Server::start_role_with(role, env, &RoleOptions::default()).await
    }

    /// [`Server::start_role`] with its output kept, in another directory, or on another host.
    pub async fn start_role_with(
        role: &str,
        env: &[(String, String)],
        options: &RoleOptions,
    ) -> Server {
        let port = free_port();
        let mut cmd = Command::new(bin());
        let host = options.host.as_deref().unwrap_or("127.0.0.1");
        cmd.arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BOURSE_HTTP_ADDR", format!("{host}:{port}"))
            .env("BOURSE_LOG", "warn");
        match &options.output {
            Some(path) => {
                let file = std::fs::File::create(path).expect("create the output file");
                cmd.stdout(file.try_clone().expect("output file"))
                    .stderr(file);
            }
            None => {
                let stderr = match &options.log {
                    Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log")),
                    None => Stdio::inherit(),
                };
                cmd.stdout(Stdio::null()).stderr(stderr);
            }
        }
        if let Some(dir) = &options.dir {
            cmd.current_dir(dir);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn bourse");
        let server = Server {
            base: format!("http://127.0.0.1:{port}"),
            child,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bourse did not become ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// GET with an `Authorization` header.
    pub async fn get_auth(&self, path: &str, auth: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("authorization", auth)
            .send()
            .await
            .expect("GET")
    }

    /// The JSON body of a GET with an `Authorization` header, whatever its status.
    pub async fn get_auth_json(&self, path: &str, auth: &str) -> serde_json::Value {
        self.get_auth(path, auth)
            .await
            .json()
            .await
            .expect("JSON body")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST JSON")
    }

    /// POST an `application/x-www-form-urlencoded` form.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .form(fields)
            .send()
            .await
            .expect("POST form")
    }

    /// POST a body as is, with its content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("JSON body")
    }

    /// Polls `path` until `check` holds on its JSON (or fails after 10 s).
    pub async fn eventually(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(path).await;
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.expect("JSON body");
                if check(&v) {
                    return v;
                }
                assert!(Instant::now() < deadline, "{what}: last {path} = {v}");
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {path} answered {}",
                    r.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to drain or acknowledge anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "bourse serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How [`Server::start_role_with`] runs a role besides its environment.
#[derive(Default, Clone)]
pub struct RoleOptions {
    /// Stdout and stderr go to this file.
    pub output: Option<PathBuf>,
    /// Only stderr (the log) goes to this file; stdout is dropped. `output` wins.
    pub log: Option<PathBuf>,
    /// Working directory (the embedded SQLite file lands there).
    pub dir: Option<PathBuf>,
    /// The listening host; `127.0.0.1` unless set (the tests still connect to 127.0.0.1).
    pub host: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a user with the real CLI.
pub fn create_user(database_url: &str, username: &str, password: &str, admin: bool) {
    let mut cmd = Command::new(bin());
    cmd.args([
        "user",
        "create",
        "--username",
        username,
        "--password",
        password,
    ])
    .env("BOURSE_DATABASE_URL", database_url)
    .env("BOURSE_LOG", "warn");
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().expect("run bourse user create");
    assert!(
        out.status.success(),
        "user create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `bourse import ARGS…` against `database_url` (the real CLI, nothing else from the
/// environment but PATH).
pub fn import(database_url: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("import")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOURSE_DATABASE_URL", database_url)
        .env("BOURSE_LOG", "warn")
        .output()
        .expect("run bourse import")
}

/// Issues an API key with the real CLI (`bourse user token`).
pub fn issue_token(database_url: &str, username: &str) -> String {
    let out = Command::new(bin())
        .args(["user", "token", "--username", username])
        .env("BOURSE_DATABASE_URL", database_url)
        .env("BOURSE_LOG", "warn")
        .output()
        .expect("run bourse user token");
    assert!(
        out.status.success(),
        "user token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 key")
        .trim()
        .to_string()
}

/// Registers through `POST /register` (JSON) and returns the API key.
pub async fn register(server: &Server, email: &str) -> String {
    let r = server
        .post_json(
            "/register",
            &serde_json::json!({"name": "Dave", "last_name": "Mustaine", "email": email}),
        )
        .await;
    assert_eq!(r.status(), 201, "register {email}");
    let body: serde_json::Value = r.json().await.expect("JSON body");
    body["token"].as_str().expect("a token").to_string()
}

pub fn token(key: &str) -> String {
    format!("Token {key}")
}

/// Publishes payloads with QoS 1 and returns once the broker acknowledged all of them.
pub async fn publish(topic: &str, payloads: &[Vec<u8>]) {
    let url: bourse_feed::mqtt::MqttUrl = mqtt_url().parse().expect("BOURSE_TEST_MQTT_URL");
    let mut opts = url.options(&unique("test-pub"));
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_inflight(100);
    opts.set_max_packet_size(2 << 20, 2 << 20); // room for oversized payloads
    let (client, mut eventloop) = AsyncClient::new(opts, payloads.len().max(10) + 10);
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await
            .expect("queue publish");
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked < payloads.len() {
        let ev = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("broker acknowledged in time")
            .unwrap_or_else(|e| panic!("MQTT connection to {}: {e}", mqtt_url()));
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            acked += 1;
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

pub fn tick(stock_id: &str, name: &str, price: &str, ts: &str) -> Vec<u8> {
    format!(
        r#"{{"stock_id": "{stock_id}", "name": "{name}", "price": {price}, "availability": 46, "timestamp": "{ts}"}}"#
    )
    .into_bytes()
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Runs `$body` (an async fn taking an `Engine`) once per engine as separate tests.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident => $body:ident;)*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$body($crate::common::Engine::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$body($crate::common::Engine::Postgres).await })*
        }
    };
}
