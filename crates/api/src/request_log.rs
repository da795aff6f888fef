//! The request log: one line per API request, in the format of the DRF-style API it follows,
//!
//! ```text
//! [31/Jul/2022 13:56:08] [INFO] [API_REQUEST] GET /api/v1/symbol/ibm/ user@example.com
//! ```
//!
//! with the time in UTC, the path without its query string, and the caller's email, else
//! username, else `AnonymousUser`. Health, metrics, docs and the live stream are not logged
//! ([`crate::identity::is_untracked`]); throttled and unauthorised requests are.
//!
//! Nothing here blocks a request: the [`crate::gate`] formats the line and offers it to a bounded
//! channel (`try_send`); a dedicated thread writes the lines, flushes whenever the channel runs
//! empty, and rotates the file by size (`apicalls.log` → `apicalls.log.1` → … → `.N`, the
//! oldest dropped). If the disk is too slow and the channel fills up, lines are dropped and
//! counted in `bourse_request_log_dropped_total` instead of slowing the API down.

use chrono::{DateTime, Utc};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Lines dropped because the writer fell behind or failed.
pub const DROPPED: &str = "bourse_request_log_dropped_total";

pub fn describe() {
    metrics::describe_counter!(
        DROPPED,
        metrics::Unit::Count,
        "Request log lines dropped because the log writer fell behind or could not write."
    );
    metrics::counter!(DROPPED).increment(0);
}

/// One log line, newline included. Control characters (which could forge extra lines) are
/// replaced.
pub fn format_line(at: DateTime<Utc>, method: &str, path: &str, who: &str) -> String {
    let line = format!(
        "[{}] [INFO] [API_REQUEST] {method} {path} {who}",
        at.format("%d/%b/%Y %H:%M:%S")
    );
    let mut clean: String = line
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    clean.push('\n');
    clean
}

#[derive(Debug, Clone)]
pub struct RequestLogConfig {
    /// `BOURSE_REQUEST_LOG` (`apicalls.log`).
    pub path: PathBuf,
    /// Rotate before the file would exceed this many bytes; 0 = never rotate.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` … `.keep`); 0 = truncate instead.
    pub keep: usize,
    /// Lines that may wait for the writer.
    pub capacity: usize,
}

impl RequestLogConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
            capacity: 65_536,
        }
    }
}

/// The sending side, cheap to clone; lives in the API context.
#[derive(Debug, Clone)]
pub struct RequestLog {
    tx: mpsc::Sender<String>,
}

/// The writer thread; [`RequestLogWriter::finish`] waits until every line is written (after
/// every [`RequestLog`] is dropped).
#[derive(Debug)]
pub struct RequestLogWriter {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RequestLog {
    /// Opens (creates) the file now, so that a bad path stops start-up instead of losing every
    /// line later, and starts the writer thread.
    pub fn start(config: RequestLogConfig) -> io::Result<(RequestLog, RequestLogWriter)> {
        let file = RotatingFile::open(&config)?;
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || write_lines(file, rx))?;
        Ok((
            RequestLog { tx },
            RequestLogWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Queues a line; never waits.
    pub fn record(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            metrics::counter!(DROPPED).increment(1);
        }
    }
}

impl RequestLogWriter {
    /// Blocks until the writer has written everything and stopped (call from a blocking task).
    pub fn finish(mut self) {
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the request log writer panicked");
            }
        }
    }
}

fn write_lines(mut file: RotatingFile, mut rx: mpsc::Receiver<String>) {
    while let Some(line) = rx.blocking_recv() {
        file.write(&line);
        while let Ok(line) = rx.try_recv() {
            file.write(&line);
        }
        file.flush();
    }
    file.flush();
}

/// An append-only file rotated by size. Write errors are logged and the line counted as
/// dropped; the file is reopened on the next line.
struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: Option<BufWriter<File>>,
    size: u64,
}

impl RotatingFile {
    fn open(config: &RequestLogConfig) -> io::Result<Self> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let (out, size) = append(&config.path)?;
        Ok(Self {
            path: config.path.clone(),
            max_bytes: config.max_bytes,
            keep: config.keep,
            out: Some(out),
            size,
        })
    }

    fn write(&mut self, line: &str) {
        let len = line.len() as u64;
        if let Err(e) = self.try_write(line.as_bytes(), len) {
            self.out = None;
            metrics::counter!(DROPPED).increment(1);
            tracing::warn!(error = %e, path = %self.path.display(), "request log: cannot write");
        }
    }

    fn try_write(&mut self, bytes: &[u8], len: u64) -> io::Result<()> {
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                let (out, size) = append(&self.path)?;
                self.size = size;
                self.out.insert(out)
            }
        };
        out.write_all(bytes)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        if self.keep == 0 {
            File::create(&self.path)?;
        } else {
            for i in (1..self.keep).rev() {
                rename_if_present(&numbered(&self.path, i), &numbered(&self.path, i + 1))?;
            }
            rename_if_present(&self.path, &numbered(&self.path, 1))?;
        }
        let (out, size) = append(&self.path)?;
        self.out = Some(out);
        self.size = size;
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            if let Err(e) = out.flush() {
                self.out = None;
                tracing::warn!(error = %e, path = %self.path.display(), "request log: cannot flush");
            }
        }
    }
}

fn append(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

/// `apicalls.log` → `apicalls.log.3`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ANONYMOUS;
    use chrono::TimeZone;

    #[test]
    fn lines_have_the_seed_format() {
        let at = Utc.with_ymd_and_hms(2022, 7, 31, 13, 56, 8).unwrap();
        assert_eq!(
            format_line(at, "GET", "/api/v1/symbol/ibm/", "user@example.com"),
            "[31/Jul/2022 13:56:08] [INFO] [API_REQUEST] GET /api/v1/symbol/ibm/ user@example.com\n"
        );
        let at = Utc.with_ymd_and_hms(2022, 8, 1, 0, 31, 1).unwrap();
        assert_eq!(
            format_line(at, "POST", "/api/v1/register/", ANONYMOUS),
            "[01/Aug/2022 00:31:01] [INFO] [API_REQUEST] POST /api/v1/register/ AnonymousUser\n"
        );
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let at = Utc.with_ymd_and_hms(2022, 8, 1, 0, 0, 0).unwrap();
        let line = format_line(
            at,
            "GET",
            "/x",
            "evil\n[01/Aug/2022 00:00:00] [INFO] forged",
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with("forged\n"));
    }

    fn lines_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .map(|t| t.lines().map(String::from).collect())
            .unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/apicalls.log");
        let config = RequestLogConfig {
            max_bytes: 100,
            keep: 2,
            ..RequestLogConfig::new(&path)
        };
        let mut file = RotatingFile::open(&config).unwrap();
        for i in 0..12 {
            // 24 bytes each: four per file.
            file.write(&format!("line {i:02} padding....... \n"));
        }
        file.flush();
        assert_eq!(lines_in(&path).len(), 4);
        assert_eq!(lines_in(&numbered(&path, 1)).len(), 4);
        assert_eq!(lines_in(&numbered(&path, 2)).len(), 4);
        assert!(!numbered(&path, 3).exists(), "only `keep` rotated files");
        assert!(lines_in(&path)[0].starts_with("line 08"));
        assert!(lines_in(&numbered(&path, 2))[0].starts_with("line 00"));
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        }
        // One more rotation drops the oldest file.
        for i in 12..16 {
            file.write(&format!("line {i:02} padding....... \n"));
        }
        file.flush();
        assert!(lines_in(&numbered(&path, 2))[0].starts_with("line 04"));
    }

    #[test]
    fn reopening_appends_and_keep_zero_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apicalls.log");
        let config = RequestLogConfig {
            max_bytes: 30,
            keep: 0,
            ..RequestLogConfig::new(&path)
        };
        let mut file = RotatingFile::open(&config).unwrap();
        file.write("first line of 20 b.\n");
        file.flush();
        drop(file);
        let mut file = RotatingFile::open(&config).unwrap();
        assert_eq!(file.size, 20, "appends to what is there");
        file.write("second line 20 b...\n");
        file.flush();
        assert_eq!(lines_in(&path), ["second line 20 b..."]);
        assert!(!numbered(&path, 1).exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_thread_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apicalls.log");
        let (log, writer) = RequestLog::start(RequestLogConfig::new(&path)).unwrap();
        let at = Utc.with_ymd_and_hms(2022, 7, 31, 13, 56, 8).unwrap();
        for i in 0..1000 {
            log.record(format_line(at, "GET", &format!("/stocks/{i}"), ANONYMOUS));
        }
        drop(log);
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap();
        let lines = lines_in(&path);
        assert_eq!(lines.len(), 1000);
        assert_eq!(
            lines[999],
            "[31/Jul/2022 13:56:08] [INFO] [API_REQUEST] GET /stocks/999 AnonymousUser"
        );
    }

    #[test]
    fn a_bad_path_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let err = RequestLog::start(RequestLogConfig::new(blocker.join("apicalls.log")));
        assert!(err.is_err());
    }
}
