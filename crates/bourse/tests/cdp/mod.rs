//! A small Chrome DevTools Protocol client: starts Debian's headless Chromium, opens a page,
//! evaluates JavaScript in it, reads its performance metrics, takes screenshots, and records
//! everything the page reports as an error (console errors, uncaught exceptions, failed loads,
//! Content-Security-Policy violations).
//!
//! The browser is `$CHROME`, or `/usr/bin/chromium` (`apt-get install -y chromium`). It runs with
//! a throw-away profile and is killed on drop. A missing browser fails the test, never skips it.

#![allow(dead_code)] // the dashboard tests use different parts

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// Events worth keeping, per session: errors the page reported and page loads.
#[derive(Default)]
struct Recorded {
    errors: Vec<String>,
    loads: usize,
}

pub struct Browser {
    child: Child,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    recorded: Arc<Mutex<HashMap<String, Recorded>>>,
    next_id: AtomicU64,
    _profile: TempProfile,
}

struct TempProfile(PathBuf);

impl Drop for TempProfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The browser binary: `$CHROME` or Debian's chromium. Panics with the fix when it is missing.
pub fn chrome_path() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROME").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "headless Chromium is required for the dashboard's browser tests and was not found at {}: \
         install it with `apt-get install -y chromium` (as .ci/run does) or set CHROME to a \
         Chromium or Chrome binary",
        path.display()
    );
    path
}

impl Browser {
    /// Starts headless Chromium with a `width`×`height` window and connects to it.
    pub async fn launch(width: u32, height: u32) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("bourse-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("create browser profile dir");
        let mut child = Command::new(chrome_path())
            .args([
                "--headless",
                // Tests run as root in containers, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chrome_path().display()));

        // Chromium prints its DevTools endpoint on stderr; the rest of stderr is drained (and
        // kept for the failure message) so that the browser never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let (endpoint_tx, endpoint_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut endpoint_tx = Some(endpoint_tx);
            let mut seen = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = endpoint_tx.take() {
                        let _ = tx.send(Ok(url.trim().to_string()));
                    }
                } else if endpoint_tx.is_some() && seen.len() < 50 {
                    seen.push(line);
                }
            }
            if let Some(tx) = endpoint_tx.take() {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let endpoint = match endpoint_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(url)) => url,
            Ok(Err(output)) => {
                let _ = child.kill();
                panic!("Chromium exited before opening DevTools:\n{output}")
            }
            Err(_) => {
                let _ = child.kill();
                panic!("Chromium did not open DevTools within 60 s")
            }
        };

        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to Chromium's DevTools socket");
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let recorded: Arc<Mutex<HashMap<String, Recorded>>> = Arc::default();
        {
            let pending = pending.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if let Some(id) = v["id"].as_u64() {
                        let answer = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        if let Some(tx) = pending.lock().ok().and_then(|mut p| p.remove(&id)) {
                            let _ = tx.send(answer);
                        }
                    } else if let Some(method) = v["method"].as_str() {
                        let session = v["sessionId"].as_str().unwrap_or_default().to_string();
                        if let Ok(mut all) = recorded.lock() {
                            record(all.entry(session).or_default(), method, &v["params"]);
                        }
                    }
                }
            });
        }
        Browser {
            child,
            outgoing,
            pending,
            recorded,
            next_id: AtomicU64::new(1),
            _profile: TempProfile(profile),
        }
    }

    /// Sends one command (to a page when `session` is given) and waits for its result.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending map").insert(id, tx);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            command["sessionId"] = json!(s);
        }
        self.outgoing
            .send(Message::text(command.to_string()))
            .expect("DevTools connection open");
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method} failed: {error}"),
            Ok(Err(_)) => panic!("{method}: DevTools connection closed"),
            Err(_) => panic!("{method}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// Opens a new tab on `url` and waits for its load event.
    pub async fn open(&self, url: &str) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        for domain in ["Runtime", "Log", "Page", "Performance", "HeapProfiler"] {
            page.call(&format!("{domain}.enable"), json!({})).await;
        }
        page.call("Page.navigate", json!({"url": url})).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while page.recorded(|r| r.loads) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} did not load within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        page
    }
}

fn record(into: &mut Recorded, method: &str, params: &Value) {
    match method {
        "Page.loadEventFired" => into.loads += 1,
        "Runtime.consoleAPICalled" => {
            let kind = params["type"].as_str().unwrap_or_default();
            if kind == "error" || kind == "assert" {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|arg| {
                                arg.get("value")
                                    .map(Value::to_string)
                                    .or_else(|| arg["description"].as_str().map(String::from))
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                into.errors
                    .push(format!("console.{kind}: {}", args.join(" ")));
            }
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            into.errors.push(format!("uncaught: {text}"));
        }
        "Log.entryAdded" => {
            let entry = &params["entry"];
            if entry["level"].as_str() == Some("error") {
                into.errors.push(format!(
                    "{} error: {} {}",
                    entry["source"].as_str().unwrap_or("log"),
                    entry["text"].as_str().unwrap_or_default(),
                    entry["url"].as_str().unwrap_or_default()
                ));
            }
        }
        _ => {}
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab, attached with its own DevTools session.
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
}

impl Page<'_> {
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    fn recorded<T>(&self, read: impl FnOnce(&Recorded) -> T) -> T {
        let all = self.browser.recorded.lock().expect("recorded events");
        let empty = Recorded::default();
        read(all.get(&self.session).unwrap_or(&empty))
    }

    /// Everything the page reported as an error so far.
    pub fn errors(&self) -> Vec<String> {
        self.recorded(|r| r.errors.clone())
    }

    /// Evaluates `expression` (awaiting it if it is a promise) and returns its JSON value.
    /// A thrown exception fails the test.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression:?} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// The page's performance counters (`Nodes`, `JSHeapUsedSize`, `JSEventListeners`, …).
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let r = self.call("Performance.getMetrics", json!({})).await;
        r["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["value"].as_f64()?)))
            .collect()
    }

    pub async fn collect_garbage(&self) {
        self.call("HeapProfiler.collectGarbage", json!({})).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }
}
