//! `bourse import FILE…`: loads OHLCV CSV files into the bars table.
//!
//! Streaming: a reader thread reads each file line by line (any size; BOM and CRLF tolerated),
//! parses rows with the domain parser ([`CsvLayout`]) and hands batches to the writers over
//! bounded channels, so parsing the next batch overlaps with committing the previous ones and
//! memory stays at a few batches. Each batch is one transaction (an upsert by `(symbol, date)`,
//! see [`Store::import_bars_with`]), so an interrupted import leaves whole batches, and running
//! it again is harmless. On PostgreSQL, `--writers` transactions run at once, each on the rows
//! whose key hashes to it (so the last row of a key still wins), and they commit without waiting
//! for the disk ([`Durability::Deferred`]); the import waits for one final synchronous flush
//! before it reports anything as imported.
//!
//! A bad row is reported as `FILE:LINE: reason`. With `--on-error stop` (the default) the rows
//! before it are committed and the import stops with an error; with `--on-error skip` it is
//! counted, reported, and left out. A bad header stops the import either way. A progress bar
//! (bytes read, rows, rows/s) is drawn on stderr when it is a terminal; a summary line is printed
//! on stdout at the end.

use crate::config::Database;
use anyhow::Context;
use bourse_domain::bar_csv::{is_blank, CsvLayout};
use bourse_domain::{Bar, BarError};
use bourse_store::bars::Durability;
use bourse_store::{Engine, Store};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to do with a row that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Commit the rows before it, report it, and stop with an error.
    Stop,
    /// Report it, leave it out, and go on.
    Skip,
}

/// The import's own flags (the database comes from the configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// What to do with a row that does not parse: stop (rows before it stay imported) or skip it
    #[arg(long, value_enum, default_value = "stop")]
    pub on_error: OnError,
    /// Rows per transaction
    // Per writer. On PostgreSQL each batch is one COPY, and larger batches import faster; memory
    // stays at a few batches (docs/decisions/0003-bar-import-upsert.md).
    #[arg(long, default_value_t = 50_000)]
    pub batch_size: usize,
    /// Concurrent writers on PostgreSQL (rows are split among them by symbol and date)
    // SQLite always uses one.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// CSV files: symbol,date,open,high,low,close,volume (BOM and CRLF tolerated; upsert by symbol and date)
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Skipped rows reported one by one; beyond this, only counted.
const MAX_REPORTED: u64 = 50;

#[derive(Debug, Default)]
struct Totals {
    rows: u64,
    skipped: u64,
    files: usize,
}

/// What the reader thread hands to the writer.
enum Chunk {
    /// Parsed rows, and how far into the file the reader is (bytes).
    Rows { bars: Vec<Bar>, position: u64 },
    /// A bad row (`skip` mode: reported and counted; `stop` mode: the last message).
    Bad { line: u64, error: String },
    /// The file cannot be read any further (I/O error or bad header): fatal.
    Fatal(anyhow::Error),
}

pub async fn run(config: &Database, options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(!options.files.is_empty(), "no file to import");
    for file in &options.files {
        anyhow::ensure!(file.is_file(), "{}: no such file", file.display());
    }
    let store = super::connect(config).await?;
    if config.migrate {
        store.migrate().await.context("migrations failed")?;
    }
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut outcome = Ok(());
    for file in &options.files {
        outcome = import_file(&store, file, &options, &mut totals).await;
        if outcome.is_err() {
            break;
        }
        totals.files += 1;
    }
    store.close().await;
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        totals.rows as f64 / seconds
    } else {
        0.0
    };
    println!(
        "imported {} rows, skipped {}, from {} file{} in {:.3} s ({:.0} rows/s)",
        totals.rows,
        totals.skipped,
        totals.files,
        if totals.files == 1 { "" } else { "s" },
        seconds,
        rate
    );
    outcome
}

fn progress_bar(path: &Path, len: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(path.display().to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The writers of one file. Each gets the rows whose `(symbol, date)` hashes to it, in file
/// order, and commits them in order, so the last row of a key still wins while several
/// transactions run at once.
struct Writers {
    senders: Vec<mpsc::Sender<Vec<Bar>>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), bourse_store::StoreError>>>,
    committed: Arc<AtomicU64>,
}

impl Writers {
    fn start(store: &Store, count: usize) -> Writers {
        let committed = Arc::new(AtomicU64::new(0));
        let (senders, tasks) = (0..count.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Vec<Bar>>(2);
                let store = store.clone();
                let committed = committed.clone();
                let task = tokio::spawn(async move {
                    while let Some(bars) = rx.recv().await {
                        store.import_bars_with(&bars, Durability::Deferred).await?;
                        committed.fetch_add(bars.len() as u64, Ordering::Relaxed);
                    }
                    Ok(())
                });
                (tx, task)
            })
            .unzip();
        Writers {
            senders,
            tasks,
            committed,
        }
    }

    /// Hands a batch over; false when a writer has stopped (on an error, reported by `finish`).
    async fn send(&self, bars: Vec<Bar>) -> bool {
        if self.senders.len() == 1 {
            return self.senders[0].send(bars).await.is_ok();
        }
        let n = self.senders.len();
        let mut parts: Vec<Vec<Bar>> = (0..n)
            .map(|_| Vec::with_capacity(bars.len() / n + 1))
            .collect();
        for bar in bars {
            let mut hasher = DefaultHasher::new();
            (bar.symbol.as_str(), bar.time).hash(&mut hasher);
            parts[(hasher.finish() % n as u64) as usize].push(bar);
        }
        for (sender, part) in self.senders.iter().zip(parts) {
            if !part.is_empty() && sender.send(part).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits for everything handed over to be committed and durable; the first error, if any.
    async fn finish(self, store: &Store) -> Result<u64, anyhow::Error> {
        drop(self.senders);
        let mut result = Ok(());
        for task in self.tasks {
            let outcome = match task.await {
                Ok(outcome) => outcome.map_err(anyhow::Error::new),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        // Whatever was committed is made durable, error or not: it is reported as imported.
        let flushed = store.flush_deferred().await.map_err(anyhow::Error::new);
        result.and(flushed)?;
        Ok(self.committed.load(Ordering::Relaxed))
    }
}

async fn import_file(
    store: &Store,
    path: &Path,
    options: &Options,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(path, len);
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let reader = {
        let batch_size = options.batch_size.max(1);
        let on_error = options.on_error;
        tokio::task::spawn_blocking(move || read_file(file, batch_size, on_error, &tx))
    };
    // SQLite has one writer connection: more writer tasks would only queue.
    let writers = match store.engine() {
        Engine::Postgres => options.writers.max(1),
        Engine::Sqlite => 1,
    };
    let writers = Writers::start(store, writers);
    let committed = writers.committed.clone();
    let name = path.display().to_string();
    let started = Instant::now();
    let mut result = Ok(());
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Chunk::Rows { bars, position } => {
                if !writers.send(bars).await {
                    // A writer failed; `finish` below reports why.
                    break;
                }
                bar.set_position(position);
                let rows = committed.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rows} rows, {:.0} rows/s", rows as f64 / secs));
            }
            Chunk::Bad { line, error } => match options.on_error {
                OnError::Skip => {
                    totals.skipped += 1;
                    if totals.skipped <= MAX_REPORTED {
                        bar.suspend(|| eprintln!("{name}:{line}: skipped bad row: {error}"));
                    } else if totals.skipped == MAX_REPORTED + 1 {
                        bar.suspend(|| {
                            eprintln!("(further skipped rows are counted but not reported)")
                        });
                    }
                }
                OnError::Stop => {
                    result = Err(anyhow::anyhow!(
                        "{name}:{line}: bad row: {error}\nimport stopped at line {line} of {name}: \
                         the rows before it are imported; fix the row and run again (rows are \
                         upserted), or use --on-error skip"
                    ));
                    break;
                }
            },
            Chunk::Fatal(e) => {
                result = Err(e.context(name.clone()));
                break;
            }
        }
    }
    // Dropping the receiver stops the reader at its next send.
    drop(rx);
    let _ = reader.await;
    let written = writers.finish(store).await;
    bar.finish_and_clear();
    match written {
        Ok(rows) => {
            totals.rows += rows;
            result
        }
        Err(e) => {
            totals.rows += committed.load(Ordering::Relaxed);
            Err(e.context(format!(
                "{name}: could not store rows (the batch in flight is not imported)"
            )))
        }
    }
}

/// The reader thread: lines -> batches of bars. Stops quietly when the writer hangs up.
fn read_file(file: File, batch_size: usize, on_error: OnError, tx: &mpsc::Sender<Chunk>) {
    let send = |chunk: Chunk| tx.blocking_send(chunk).is_ok();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0u64;
    let mut position = 0u64;
    let mut layout: Option<CsvLayout> = None;
    let mut bars = Vec::with_capacity(batch_size);
    loop {
        buf.clear();
        let read = match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                send(Chunk::Fatal(
                    anyhow::Error::new(e).context(format!("read error after line {line_no}")),
                ));
                return;
            }
        };
        line_no += 1;
        position += read as u64;
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text,
            Err(_) => {
                if layout.is_none() {
                    send(Chunk::Fatal(anyhow::anyhow!(
                        "line {line_no}: the header is not UTF-8 text"
                    )));
                    return;
                }
                if !report_bad(
                    &send,
                    &mut bars,
                    position,
                    line_no,
                    "not UTF-8 text",
                    on_error,
                ) {
                    return;
                }
                continue;
            }
        };
        let Some(layout) = layout.as_ref() else {
            if is_blank(text.trim_start_matches('\u{feff}')) {
                continue;
            }
            match CsvLayout::from_header(text) {
                Ok(l) => layout = Some(l),
                Err(e) => {
                    send(Chunk::Fatal(anyhow::anyhow!("line {line_no}: {e}")));
                    return;
                }
            }
            continue;
        };
        if is_blank(text) {
            continue;
        }
        match layout.parse_line(text) {
            Ok(bar) => {
                bars.push(bar);
                if bars.len() >= batch_size {
                    let full = std::mem::replace(&mut bars, Vec::with_capacity(batch_size));
                    if !send(Chunk::Rows {
                        bars: full,
                        position,
                    }) {
                        return;
                    }
                }
            }
            Err(e) => {
                if !report_bad(&send, &mut bars, position, line_no, &describe(&e), on_error) {
                    return;
                }
            }
        }
    }
    if layout.is_none() {
        send(Chunk::Fatal(anyhow::anyhow!(
            "no header line (expected symbol,date,open,high,low,close,volume)"
        )));
        return;
    }
    if !bars.is_empty() {
        send(Chunk::Rows { bars, position });
    }
}

/// Sends a bad row. In `stop` mode the rows parsed before it go first (so they are committed)
/// and reading ends; returns whether to go on.
fn report_bad(
    send: &impl Fn(Chunk) -> bool,
    bars: &mut Vec<Bar>,
    position: u64,
    line: u64,
    error: &str,
    on_error: OnError,
) -> bool {
    if on_error == OnError::Stop && !bars.is_empty() {
        let before = std::mem::take(bars);
        if !send(Chunk::Rows {
            bars: before,
            position,
        }) {
            return false;
        }
    }
    let sent = send(Chunk::Bad {
        line,
        error: error.to_string(),
    });
    sent && on_error == OnError::Skip
}

fn describe(e: &BarError) -> String {
    e.to_string()
}
