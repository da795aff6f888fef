//! Bars repository tests, each run against SQLite and against the local PostgreSQL: import
//! upserts, range reads, the roll-up of live ticks into minute bars inside `ingest`, and the
//! PostgreSQL resampling push-down against the domain's `resample`.

use bourse_domain::bar_csv::parse_csv;
use bourse_domain::{resample, Bar, Frequency, Resample, Tick};
use bourse_store::bars::{PushDown, SeriesBar};
use bourse_store::testing::on_both;
use bourse_store::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::str::FromStr;
use uuid::Uuid;

const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/stocks_ohlcv.csv"
);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

fn shared_bars() -> Vec<Bar> {
    let text = std::fs::read_to_string(SHARED_CSV).expect("shared CSV");
    parse_csv(&text).map(|(_, b)| b.unwrap()).collect()
}

fn bar(symbol: &str, time: DateTime<Utc>, o: &str, h: &str, l: &str, c: &str, v: i64) -> Bar {
    Bar {
        symbol: symbol.into(),
        time,
        open: dec(o),
        high: dec(h),
        low: dec(l),
        close: dec(c),
        volume: v,
    }
}

fn tick(id: Uuid, name: &str, price: &str, at: DateTime<Utc>) -> Tick {
    Tick {
        stock_id: id,
        name: name.into(),
        price: dec(price),
        availability: 1,
        timestamp: at,
    }
}

#[tokio::test]
async fn import_upserts_and_reads_ranges_exactly() {
    on_both(|store| async move {
        assert!(store.bars_empty().await.unwrap());
        let bars = shared_bars();
        // In two batches, as the importer would.
        store.import_bars(&bars[..1000]).await.unwrap();
        store.import_bars(&bars[1000..]).await.unwrap();
        assert!(!store.bars_empty().await.unwrap());
        let amzn = store.bars("AMZN", None, None).await.unwrap();
        assert_eq!(amzn.len(), 754);
        assert_eq!(amzn[0].time, day(2019, 6, 28));
        assert_eq!(amzn[0].open.to_string(), "95.455002", "exact, scale kept");
        assert_eq!(amzn[0].volume, 60_748_000);
        assert!(amzn.windows(2).all(|w| w[0].time < w[1].time));
        assert_eq!(store.bars("TSLA", None, None).await.unwrap().len(), 754);

        // Inclusive bounds.
        let two = store
            .bars("AMZN", Some(day(2019, 7, 1)), Some(day(2019, 7, 2)))
            .await
            .unwrap();
        assert_eq!(two.len(), 2);
        assert!(store
            .bars("AMZN", Some(day(2030, 1, 1)), None)
            .await
            .unwrap()
            .is_empty());
        assert!(store.has_bars("AMZN").await.unwrap());
        assert!(!store.has_bars("amzn").await.unwrap(), "symbols are exact");

        // Re-import is idempotent; a changed row (and a duplicate key within one batch: the
        // later row wins) replaces the stored bar.
        store.import_bars(&bars).await.unwrap();
        store
            .import_bars(&[
                bar("AMZN", day(2019, 6, 28), "1", "3", "0.5", "2", 7),
                bar("AMZN", day(2019, 6, 28), "1.5", "3.25", "0.5", "2.75", 8),
            ])
            .await
            .unwrap();
        let again = store.bars("AMZN", None, None).await.unwrap();
        assert_eq!(again.len(), 754);
        assert_eq!(
            (again[0].open, again[0].close, again[0].volume),
            (dec("1.5"), dec("2.75"), 8)
        );
    })
    .await;
}

#[tokio::test]
async fn ticks_roll_up_into_minute_bars_in_ingest() {
    on_both(|store| async move {
        let id = Uuid::new_v4();
        let t0 = Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap();
        let s = |secs: i64| t0 + Duration::seconds(secs);
        // First batch: out of order within the minute, plus a tick of the next minute.
        store
            .ingest(
                &[
                    tick(id, "Hamada Inc", "7.50", s(30)),
                    tick(id, "Hamada Inc", "7.40", s(10)),
                    tick(id, "Hamada Inc", "7.70", s(45)),
                    tick(id, "Hamada Inc", "7.45", s(61)),
                ],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        let bars = store.bars("Hamada Inc", None, None).await.unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].time, t0);
        let b = bars[0];
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (dec("7.40"), dec("7.70"), dec("7.40"), dec("7.70"), 3)
        );

        // A late, older tick becomes the open; a newer one the close; duplicates (already
        // stored ticks, redelivered) do not count again.
        store
            .ingest(
                &[
                    tick(id, "Hamada Inc", "7.35", s(5)),
                    tick(id, "Hamada Inc", "7.60", s(50)),
                    tick(id, "Hamada Inc", "7.50", s(30)),
                ],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        store
            .ingest(&[tick(id, "Hamada Inc", "7.99", s(20))], &[], Utc::now())
            .await
            .unwrap();
        let b = store.bars("Hamada Inc", None, Some(s(59))).await.unwrap()[0];
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (dec("7.35"), dec("7.99"), dec("7.35"), dec("7.60"), 6)
        );
        // A redelivered batch changes nothing.
        store
            .ingest(&[tick(id, "Hamada Inc", "7.35", s(5))], &[], Utc::now())
            .await
            .unwrap();
        let again = store.bars("Hamada Inc", None, Some(s(59))).await.unwrap()[0];
        assert_eq!(again, b);

        // A tick on an imported bar of that minute: the open stays, the close moves.
        store
            .import_bars(&[bar("CIB", t0, "28", "28.5", "27.5", "28.2", 1000)])
            .await
            .unwrap();
        store
            .ingest(&[tick(Uuid::new_v4(), "CIB", "29", s(1))], &[], Utc::now())
            .await
            .unwrap();
        let c = store.bars("CIB", None, None).await.unwrap()[0];
        assert_eq!(
            (c.open, c.high, c.low, c.close, c.volume),
            (dec("28"), dec("29"), dec("27.5"), dec("29"), 1001)
        );
    })
    .await;
}

/// Minute bars over two and a half years with gaps (nights, weekends, a missing month), so that
/// every bin rule is exercised.
fn minute_bars() -> Vec<Bar> {
    let mut out = Vec::new();
    let mut t = Utc.with_ymd_and_hms(2021, 11, 30, 22, 58, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 0).unwrap();
    let mut i: i64 = 0;
    while t < end {
        let skip_month = t.format("%Y-%m").to_string() == "2022-08";
        if !skip_month {
            let base = 100 + (i * 37) % 23;
            let price = |d: i64| Decimal::new(base * 100 + d, 2);
            out.push(Bar {
                symbol: "BENCH".into(),
                time: t,
                open: price(i % 7),
                high: price(10),
                low: price(-3),
                close: price(i % 5),
                volume: 1 + i % 11,
            });
        }
        i += 1;
        // Every 97 minutes, with a long hop now and then.
        t += Duration::minutes(if i % 50 == 0 { 60 * 37 } else { 97 });
    }
    out
}

#[tokio::test]
async fn resampling_in_postgres_matches_the_domain() {
    on_both(|store| async move {
        let bars = minute_bars();
        store.import_bars(&bars).await.unwrap();
        let from = Some(Utc.with_ymd_and_hms(2022, 1, 5, 13, 0, 0).unwrap());
        let to = Some(Utc.with_ymd_and_hms(2023, 11, 20, 9, 30, 0).unwrap());
        for frequency in Frequency::ALL {
            for interval in [1, 2, 3, 5] {
                let spec = Resample::new(frequency, interval).unwrap();
                for (from, to) in [(None, None), (from, to)] {
                    let stored: Vec<SeriesBar> = store.bars("BENCH", from, to).await.unwrap();
                    let expected = resample(&stored, spec);
                    let pushed = store
                        .resample_in_database("BENCH", from, to, spec, PushDown::Always)
                        .await
                        .unwrap();
                    match store.engine() {
                        Engine::Sqlite => assert!(pushed.is_none()),
                        Engine::Postgres => {
                            assert_eq!(
                                pushed.unwrap(),
                                expected,
                                "{frequency}/{interval} {from:?}..{to:?}"
                            )
                        }
                    }
                }
            }
        }
        // Only when bins are much coarser than the bars (every 97 minutes here): Daily bins hold
        // about 15 bars, Weekly about 100.
        let daily = Resample::every(Frequency::Daily);
        let weekly = Resample::every(Frequency::Weekly);
        let coarse =
            |spec| store.resample_in_database("BENCH", None, None, spec, PushDown::WhenCoarse);
        assert!(coarse(daily).await.unwrap().is_none());
        assert_eq!(
            coarse(weekly).await.unwrap().is_some(),
            store.engine() == Engine::Postgres
        );
        let none = store
            .resample_in_database(
                "NOPE",
                None,
                None,
                Resample::every(Frequency::Annual),
                PushDown::Always,
            )
            .await
            .unwrap();
        assert!(none.is_none_or(|rows| rows.is_empty()));
    })
    .await;
}
