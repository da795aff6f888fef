//! Bars repository tests, each run against SQLite and against the local PostgreSQL: import
//! upserts, range reads, the roll-up of live ticks into minute bars inside `ingest`, and the
//! PostgreSQL resampling push-down against the domain's `resample`.

use bourse_domain::bar_csv::parse_csv;
use bourse_domain::{resample, Bar, Frequency, Resample, ResampledBar, Tick};
use bourse_store::bars::{PushDown, SeriesBar};
use bourse_store::testing::on_both;
use bourse_store::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::str::FromStr;
use uuid::Uuid;

const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../domain/tests/fixtures/stocks_ohlcv.csv"
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

/// `count` consecutive daily bars of `symbol` from 2024-01-01, their prices offset by `shift`
/// (so that two generations of the same keys differ in every field).
fn days(symbol: &str, count: u32, shift: i64) -> Vec<Bar> {
    (0..count)
        .map(|i| {
            let p = |d: i64| Decimal::new(10_000 + i64::from(i) * 100 + shift + d, 2);
            Bar {
                symbol: symbol.into(),
                time: day(2024, 1, 1) + Duration::days(i64::from(i)),
                open: p(1),
                high: p(9),
                low: p(-9),
                close: p(2),
                volume: 1_000 + i64::from(i) + shift,
            }
        })
        .collect()
}

/// What a series reads back as, to compare with what was imported.
fn as_stored(bars: &[Bar]) -> Vec<SeriesBar> {
    bars.iter()
        .map(|b| SeriesBar {
            symbol: (),
            time: b.time,
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
        })
        .collect()
}

// The import paths, one by one (on PostgreSQL: COPY into the table for new keys, COPY into a
// staging table and upsert when keys exist).

#[tokio::test]
async fn fresh_import_stores_every_row_exactly() {
    on_both(|store| async move {
        let bars = days("NEW", 500, 0);
        assert_eq!(store.import_bars(&bars).await.unwrap(), 500);
        assert_eq!(
            store.bars("NEW", None, None).await.unwrap(),
            as_stored(&bars)
        );
        // Symbols and prices that text formats would have to escape or round.
        let odd = [
            bar(
                "A\tB\\C\n\"D,E",
                day(2024, 1, 1),
                "0.000001",
                "123456789.123456789",
                "0",
                "-1.5",
                0,
            ),
            bar(
                "Hamada Inc",
                day(1969, 12, 31),
                "95.455002",
                "96",
                "95",
                "95.5",
                i64::MAX,
            ),
        ];
        assert_eq!(store.import_bars(&odd).await.unwrap(), 2);
        for b in &odd {
            assert_eq!(
                store.bars(&b.symbol, None, None).await.unwrap(),
                as_stored(std::slice::from_ref(b)),
                "{:?}",
                b.symbol
            );
        }
    })
    .await;
}

#[tokio::test]
async fn reimport_overwrites_stored_values() {
    on_both(|store| async move {
        store.import_bars(&days("RE", 300, 0)).await.unwrap();
        let changed = days("RE", 300, 7);
        assert_eq!(store.import_bars(&changed).await.unwrap(), 300);
        assert_eq!(
            store.bars("RE", None, None).await.unwrap(),
            as_stored(&changed)
        );
        // The same file again changes nothing.
        store.import_bars(&changed).await.unwrap();
        assert_eq!(
            store.bars("RE", None, None).await.unwrap(),
            as_stored(&changed)
        );
    })
    .await;
}

#[tokio::test]
async fn duplicate_keys_in_one_batch_keep_the_last_row() {
    on_both(|store| async move {
        // Fresh keys, each given three times in the batch: the last one wins.
        let mut batch = days("DUP", 50, 0);
        batch.extend(days("DUP", 50, 3));
        batch.extend(days("DUP", 50, 5));
        assert_eq!(store.import_bars(&batch).await.unwrap(), 50);
        assert_eq!(
            store.bars("DUP", None, None).await.unwrap(),
            as_stored(&days("DUP", 50, 5))
        );
        // Stored keys, given twice: the last one wins again.
        let mut again = days("DUP", 50, 11);
        again.extend(days("DUP", 50, 4));
        assert_eq!(store.import_bars(&again).await.unwrap(), 50);
        assert_eq!(
            store.bars("DUP", None, None).await.unwrap(),
            as_stored(&days("DUP", 50, 4))
        );
    })
    .await;
}

#[tokio::test]
async fn mixed_new_and_stored_keys_in_one_batch() {
    on_both(|store| async move {
        // Every other day stored first, with other values; an untouched series beside it.
        let old: Vec<Bar> = days("MIX", 400, 1).into_iter().step_by(2).collect();
        store.import_bars(&old).await.unwrap();
        store.import_bars(&days("KEEP", 10, 0)).await.unwrap();
        // The whole range: half the keys exist, half are new, interleaved; the stored ones
        // come last in the batch, after the new ones.
        let all = days("MIX", 400, 2);
        let (mut batch, stored): (Vec<Bar>, Vec<Bar>) = all
            .iter()
            .cloned()
            .partition(|b| !old.iter().any(|o| o.time == b.time));
        batch.extend(stored);
        assert_eq!(store.import_bars(&batch).await.unwrap(), 400);
        assert_eq!(
            store.bars("MIX", None, None).await.unwrap(),
            as_stored(&all)
        );
        assert_eq!(
            store.bars("KEEP", None, None).await.unwrap(),
            as_stored(&days("KEEP", 10, 0))
        );
    })
    .await;
}

#[tokio::test]
async fn import_replaces_a_live_minute_bar_and_its_tick_times() {
    on_both(|store| async move {
        let t0 = Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap();
        let id = Uuid::new_v4();
        store
            .ingest(
                &[tick(id, "LIVE", "7.50", t0 + Duration::seconds(30))],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        // Imported over the live bar (with a new key beside it, so that the batch is mixed).
        let imported = [
            bar("LIVE", t0, "7", "8", "6", "7.25", 100),
            bar(
                "LIVE",
                t0 + Duration::minutes(1),
                "7.25",
                "7.5",
                "7",
                "7.5",
                50,
            ),
        ];
        store.import_bars(&imported).await.unwrap();
        assert_eq!(
            store.bars("LIVE", None, None).await.unwrap(),
            as_stored(&imported)
        );
        // A later tick of that minute merges with the imported bar as with any bar without tick
        // times: the open stays, the close moves.
        store
            .ingest(
                &[tick(id, "LIVE", "9", t0 + Duration::seconds(10))],
                &[],
                Utc::now(),
            )
            .await
            .unwrap();
        let b = store.bars("LIVE", None, Some(t0)).await.unwrap()[0];
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (dec("7"), dec("9"), dec("6"), dec("9"), 101)
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
                        .resample_in_database("BENCH", from, to, spec, PushDown::Always, None, None)
                        .await
                        .unwrap();
                    // One page of 3 bins: the rows of the bins before the window's end.
                    let paged = store
                        .resample_in_database(
                            "BENCH",
                            from,
                            to,
                            spec,
                            PushDown::Always,
                            None,
                            Some(3),
                        )
                        .await
                        .unwrap();
                    match store.engine() {
                        Engine::Sqlite => assert!(pushed.is_none() && paged.is_none()),
                        Engine::Postgres => {
                            let what = format!("{frequency}/{interval} {from:?}..{to:?}");
                            let pushed = pushed.unwrap();
                            assert_eq!(pushed.rows, expected, "{what}");
                            assert!(!pushed.more, "{what}");
                            let first = stored[0].time;
                            let end = spec.window(first, first, 3).unwrap().end.unwrap();
                            let (page, rest): (Vec<&ResampledBar>, Vec<&ResampledBar>) =
                                expected.iter().partition(|b| b.period_start < end);
                            let paged = paged.unwrap();
                            assert_eq!(paged.rows.iter().collect::<Vec<_>>(), page, "{what}");
                            assert_eq!(paged.more, !rest.is_empty(), "{what}");
                        }
                    }
                }
            }
        }
        // Only when bins are much coarser than the bars (every 97 minutes here): Daily bins hold
        // about 15 bars, Weekly about 100.
        let daily = Resample::every(Frequency::Daily);
        let weekly = Resample::every(Frequency::Weekly);
        let coarse = |spec| {
            store.resample_in_database("BENCH", None, None, spec, PushDown::WhenCoarse, None, None)
        };
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
                None,
                None,
            )
            .await
            .unwrap();
        assert!(none.is_none_or(|page| page.rows.is_empty()));
    })
    .await;
}
