//! Helpers of `bench/timeseries.sh`, printing timings (no Rust bench harness involved):
//!
//! - `gen-csv FILE ROWS`: writes ROWS consecutive 1-minute bars of symbol `BENCH` in the import
//!   format (`symbol,date,open,high,low,close,volume`, RFC 3339 times, 2-decimal prices).
//! - `resample-memory ROWS RUNS`: Annual resampling of ROWS in-memory minute bars with the domain's
//!   `resample`, RUNS times; prints p50 / p99 / min in ms.
//! - `resample-db URL SYMBOL FREQUENCY RUNS`: the two ways the API can answer a resampled request
//!   on that database: fetch every bar and resample in Rust, or (PostgreSQL) let the database
//!   group them (`Store::resample_in_database`); prints p50 / p99 per way, in ms.

use bourse_domain::{resample, Bar, Frequency, Resample};
use bourse_store::bars::PushDown;
use bourse_store::{ConnectOptions, Store};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::io::{BufWriter, Write};
use std::str::FromStr;
use std::time::Instant;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 1, 4, 0, 0, 0).unwrap()
}

/// Deterministic random walk in cents, with OHLC consistent per bar.
fn walk(rows: usize, mut emit: impl FnMut(DateTime<Utc>, i64, i64, i64, i64, i64)) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut price: i64 = 10_000;
    for i in 0..rows {
        let open = price;
        let close = (open + (next() % 41) as i64 - 20).max(100);
        let high = open.max(close) + (next() % 10) as i64;
        let low = (open.min(close) - (next() % 10) as i64).max(1);
        let volume = 100 + (next() % 5000) as i64;
        emit(
            start() + Duration::minutes(i as i64),
            open,
            high,
            low,
            close,
            volume,
        );
        price = close;
    }
}

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

fn gen_csv(path: &str, rows: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "symbol,date,open,high,low,close,volume")?;
    let mut result = Ok(());
    walk(rows, |t, o, h, l, c, v| {
        if result.is_ok() {
            result = writeln!(
                out,
                "BENCH,{},{},{},{},{},{v}",
                t.format("%Y-%m-%dT%H:%M:%SZ"),
                cents(o),
                cents(h),
                cents(l),
                cents(c)
            );
        }
    });
    result?;
    out.flush()?;
    Ok(())
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, min {:.1} ms",
        at(0.5),
        at(0.99),
        ms[0]
    )
}

fn resample_memory(rows: usize, runs: usize) {
    let mut bars: Vec<Bar> = Vec::with_capacity(rows);
    walk(rows, |time, o, h, l, c, volume| {
        bars.push(Bar {
            symbol: "BENCH".into(),
            time,
            open: Decimal::new(o, 2),
            high: Decimal::new(h, 2),
            low: Decimal::new(l, 2),
            close: Decimal::new(c, 2),
            volume,
        })
    });
    let spec = Resample::every(Frequency::Annual);
    let mut times = Vec::with_capacity(runs);
    let mut rows_out = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rows_out = std::hint::black_box(resample(&bars, spec)).len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "in-memory resample, Annual, {rows} minute bars -> {rows_out} rows: {}",
        percentiles(times)
    );
}

async fn resample_db(url: &str, symbol: &str, frequency: &str, runs: usize) -> anyhow::Result<()> {
    let store = Store::connect(url, &ConnectOptions::default()).await?;
    let spec = Resample::every(Frequency::from_str(frequency)?);
    let mut rust = Vec::new();
    let mut sql = Vec::new();
    let mut fetched = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let bars = store.bars(symbol, None, None).await?;
        fetched = bars.len();
        std::hint::black_box(resample(&bars, spec));
        rust.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        if store
            .resample_in_database(symbol, None, None, spec, PushDown::Always, None, None)
            .await?
            .is_some()
        {
            sql.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "{:?}: fetch {fetched} bars + resample {frequency} in Rust: {}",
        store.engine(),
        percentiles(rust)
    );
    if !sql.is_empty() {
        println!(
            "{:?}: resample {frequency} pushed down into SQL: {}",
            store.engine(),
            percentiles(sql)
        );
    }
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize, default: usize| arg(i).parse().unwrap_or(default);
    match arg(0) {
        "gen-csv" => gen_csv(arg(1), num(2, 1_000_000)),
        "resample-memory" => {
            resample_memory(num(1, 1_000_000), num(2, 21));
            Ok(())
        }
        "resample-db" => resample_db(arg(1), arg(2), arg(3), num(4, 11)).await,
        _ => anyhow::bail!(
            "usage: timeseries-bench gen-csv FILE ROWS | resample-memory ROWS RUNS | \
             resample-db URL SYMBOL FREQUENCY RUNS"
        ),
    }
}
