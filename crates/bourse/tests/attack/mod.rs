//! What the attack tests share: servers whose output is kept, metrics read back, `/proc` figures,
//! and requests as an attacker sends them.

#![allow(dead_code)] // each test binary uses a different part

use crate::common::{basic, unique, ServeSpec, Server};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A scratch directory under the system's temporary one, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("bourse-attack"));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `spec` with its output written to `log` (at `info`, so failed logins show).
pub fn logged(spec: ServeSpec, log: PathBuf) -> ServeSpec {
    let mut spec = spec.env("BOURSE_LOG", "info");
    spec.output = Some(log);
    spec
}

/// A throttle limit of `spec` (`ACCOUNT_ADDRESS`, `ADDRESS`, `ACCOUNT`); 0 turns it off.
pub fn limit(spec: ServeSpec, which: &str, value: u64) -> ServeSpec {
    spec.env(
        &format!("BOURSE_LOGIN_FAILURES_PER_{which}"),
        value.to_string(),
    )
}

/// A counter's value in `/metrics`: the sum of the series whose labels include all of `labels`.
pub async fn metric(server: &Server, name: &str, labels: &[&str]) -> f64 {
    let text = server
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `kB` figure of `/proc/<pid>/status` (`VmHWM`: peak resident memory) in MiB.
pub fn proc_status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb / 1024.0
}

/// `POST /login`, from `from` (an `X-Forwarded-For` address, when the server trusts it).
pub async fn login_from(s: &Server, user: &str, pw: &str, from: &str) -> reqwest::Response {
    let body = serde_json::json!({"username": user, "password": pw});
    send_from(s.http.post(s.url("/login")).json(&body), from).await
}

/// `GET /history` with Basic credentials, from `from`.
pub async fn basic_from(s: &Server, user: &str, pw: &str, from: &str) -> reqwest::Response {
    let request = s.http.get(s.url("/history"));
    send_from(request.header("authorization", basic(user, pw)), from).await
}

async fn send_from(request: reqwest::RequestBuilder, from: &str) -> reqwest::Response {
    request
        .header("x-forwarded-for", from)
        .send()
        .await
        .expect("a request")
}

/// Asserts a 429 with `Retry-After` within the window and the API's JSON error body.
pub async fn assert_throttled(response: reqwest::Response, window_secs: u64, what: &str) {
    assert_eq!(response.status(), 429, "{what}");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=window_secs).contains(&retry),
        "{what}: Retry-After {retry}"
    );
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert!(
        body["message"].as_str().unwrap().contains("throttled"),
        "{what}: {body}"
    );
}

/// How long a request takes, in milliseconds.
pub async fn timed<F: std::future::Future<Output = reqwest::Response>>(request: F) -> (f64, u16) {
    let started = Instant::now();
    let status = request.await.status().as_u16();
    (started.elapsed().as_secs_f64() * 1000.0, status)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The server's output so far.
pub fn output(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `path` contains `needle` (the log is written asynchronously).
pub async fn wait_for_output(path: &PathBuf, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = output(path);
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
