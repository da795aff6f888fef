//! Raw bars and resampling on the daily OHLCV fixture (tests/fixtures/stocks_ohlcv.csv) and on small
//! hand-made series.
//!
//! Reference values: the Annual AMZN figures published with the data set (tests/fixtures/README.md), and
//! `tests/fixtures/resample_amzn.json`, produced independently with pandas by
//! `python3 crates/domain/tests/fixtures/gen/gen_fixtures.py` (tool versions recorded in the file:
//! TA-Lib python 0.8.2, numpy 2.4.6, pandas 3.1.1, Python 3.11.7).

mod common;

use bourse_domain::{resample, Bar, Frequency, Ohlcv, Resample, ResampledBar, SeriesKind};
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc, Weekday};
use common::*;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::str::FromStr;

fn spec(frequency: Frequency, interval: u32) -> Resample {
    Resample::new(frequency, interval).unwrap()
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap()
}

#[test]
fn the_shared_file_parses_completely() {
    let bars = shared_bars();
    assert_eq!(bars.len(), 1508);
    let amzn: Vec<&Bar> = bars.iter().filter(|b| b.symbol == "AMZN").collect();
    let tsla: Vec<&Bar> = bars.iter().filter(|b| b.symbol == "TSLA").collect();
    assert_eq!(amzn.len(), 754);
    assert_eq!(tsla.len(), 754);

    let first = amzn[0];
    assert_eq!(first.time, day(2019, 6, 28));
    assert_eq!(first.open, Decimal::from_str("95.455002").unwrap());
    assert_eq!(first.high, Decimal::from_str("95.647003").unwrap());
    assert_eq!(first.low, Decimal::from_str("94.199997").unwrap());
    assert_eq!(first.close, Decimal::from_str("94.681503").unwrap());
    assert_eq!(first.volume, 60_748_000);
    assert_eq!(amzn.last().unwrap().time, day(2022, 6, 24));
    assert!(amzn.windows(2).all(|w| w[0].time < w[1].time));

    assert_eq!(SeriesKind::of_bars(&bars), SeriesKind::Daily);
    assert_eq!(SeriesKind::Daily.format_time(first.time), "2019-06-28");
}

#[test]
fn monthly_amzn_has_37_rows() {
    let monthly = resample(&amzn(), Resample::every(Frequency::Monthly));
    assert_eq!(monthly.len(), 37);
    assert_eq!(monthly[0].period_start, day(2019, 6, 1));
    assert_eq!(monthly[36].period_start, day(2022, 6, 1));
    assert!(monthly.iter().all(|r| r.period_start.day() == 1));
    // June 2019 holds a single bar (the 28th): the row is that bar.
    let first = &amzn()[0];
    assert_eq!(monthly[0].open, first.open);
    assert_eq!(monthly[0].close, first.close);
    assert_eq!(monthly[0].volume, first.volume);
}

#[test]
fn annual_amzn_matches_the_seed_readme() {
    // Published with the data set: `curl -G -d 'interval=1' -d 'frequency=Annual' .../AMZN`.
    let expected = [
        (2019, 95.455, 101.79, 84.253, 92.392, 8_154_332_000_i64),
        (2020, 93.75, 177.6125, 81.3015, 162.8465, 24_950_814_000),
        (2021, 163.5, 188.654, 144.05, 166.717, 17_076_362_000),
        (2022, 167.55, 171.4, 101.26, 116.46, 10_032_250_600),
    ];
    let annual = resample(&amzn(), Resample::every(Frequency::Annual));
    assert_eq!(annual.len(), expected.len());
    for (row, (year, open, high, low, close, volume)) in annual.iter().zip(expected) {
        assert_eq!(row.period_start, day(year, 1, 1));
        for (got, want, name) in [
            (row.open, open, "open"),
            (row.high, high, "high"),
            (row.low, low, "low"),
            (row.close, close, "close"),
        ] {
            let relative = (f(got) - want).abs() / want;
            assert!(relative < 1e-3, "{year} {name}: {got} vs {want}");
        }
        assert_eq!(row.volume, volume, "{year} volume");
    }
}

#[test]
fn every_frequency_and_interval_matches_pandas() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resample_amzn.json"
    ))
    .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bars = amzn();
    let series = fixture["series"].as_object().unwrap();
    assert_eq!(series.len(), 15);
    for (key, rows) in series {
        let (frequency, interval) = key.split_once('/').unwrap();
        let spec = Resample::parse(frequency, Some(interval)).unwrap();
        let got = resample(&bars, spec);
        let rows = rows.as_array().unwrap();
        assert_eq!(got.len(), rows.len(), "{key}: row count");
        for (g, want) in got.iter().zip(rows) {
            let want = want.as_array().unwrap();
            let label = want[0].as_str().unwrap();
            assert_eq!(
                g.period_start.format("%Y-%m-%d").to_string(),
                label,
                "{key}: period_start"
            );
            for (i, (value, name)) in [
                (g.open, "open"),
                (g.high, "high"),
                (g.low, "low"),
                (g.close, "close"),
            ]
            .into_iter()
            .enumerate()
            {
                assert_close(
                    f(value),
                    want[i + 1].as_f64().unwrap(),
                    1e-12,
                    &format!("{key} {label} {name}"),
                );
            }
            assert_eq!(g.volume, want[5].as_i64().unwrap(), "{key} {label} volume");
        }
    }
}

#[test]
fn weeks_are_labelled_by_their_monday() {
    let bars = amzn();
    let weekly = resample(&bars, Resample::every(Frequency::Weekly));
    assert_eq!(weekly.len(), 157);
    // The first bar is Friday 2019-06-28: its week starts on Monday the 24th.
    assert_eq!(weekly[0].period_start, day(2019, 6, 24));
    assert!(weekly
        .iter()
        .all(|r| r.period_start.weekday() == Weekday::Mon));
    assert!(weekly
        .windows(2)
        .all(|w| w[0].period_start < w[1].period_start));
    // Each week gathers exactly the bars from its Monday to its Sunday.
    for row in &weekly {
        let end = row.period_start + Duration::days(7);
        let inside: Vec<&Bar> = bars
            .iter()
            .filter(|b| b.time >= row.period_start && b.time < end)
            .collect();
        assert_eq!(row.open, inside[0].open);
        assert_eq!(row.close, inside[inside.len() - 1].close);
        assert_eq!(row.high, inside.iter().map(|b| b.high).max().unwrap());
        assert_eq!(row.low, inside.iter().map(|b| b.low).min().unwrap());
        assert_eq!(row.volume, inside.iter().map(|b| b.volume).sum::<i64>());
    }
    let total: i64 = bars.iter().map(|b| b.volume).sum();
    assert_eq!(weekly.iter().map(|r| r.volume).sum::<i64>(), total);
}

#[test]
fn multi_interval_bins_are_anchored_at_the_first_bar() {
    let bars = amzn();
    let two_months = resample(&bars, spec(Frequency::Monthly, 2));
    let labels: Vec<String> = two_months
        .iter()
        .take(4)
        .map(|r| r.period_start.format("%Y-%m").to_string())
        .collect();
    assert_eq!(labels, ["2019-06", "2019-08", "2019-10", "2019-12"]);
    // The first bin is June and July 2019.
    let june_july: Vec<&Bar> = bars.iter().filter(|b| b.time < day(2019, 8, 1)).collect();
    assert_eq!(two_months[0].open, june_july[0].open);
    assert_eq!(two_months[0].close, june_july.last().unwrap().close);
    assert_eq!(
        two_months[0].volume,
        june_july.iter().map(|b| b.volume).sum::<i64>()
    );

    // Starting one month later shifts every bin.
    let from_july: Vec<Bar> = bars
        .iter()
        .filter(|b| b.time >= day(2019, 7, 1))
        .cloned()
        .collect();
    let labels: Vec<String> = resample(&from_july, spec(Frequency::Monthly, 2))
        .iter()
        .take(3)
        .map(|r| r.period_start.format("%Y-%m").to_string())
        .collect();
    assert_eq!(labels, ["2019-07", "2019-09", "2019-11"]);

    // Quarterly by two, from 2019-Q2: bins Q2+Q3 2019, Q4 2019 + Q1 2020, ...
    let half_years = resample(&bars, spec(Frequency::Quarterly, 2));
    assert_eq!(half_years[0].period_start, day(2019, 4, 1));
    assert_eq!(half_years[1].period_start, day(2019, 10, 1));
    assert_eq!(half_years[2].period_start, day(2020, 4, 1));
}

#[test]
fn empty_periods_are_omitted_and_bins_stay_aligned() {
    // Bars in June, (nothing in July to September), October and November 2019.
    let bars = vec![
        bar_at(day(2019, 6, 3), 10, 12, 9, 11, 100),
        bar_at(day(2019, 6, 28), 11, 15, 11, 14, 50),
        bar_at(day(2019, 10, 1), 20, 21, 19, 20, 10),
        bar_at(day(2019, 11, 29), 21, 22, 18, 19, 5),
    ];
    let monthly = resample(&bars, Resample::every(Frequency::Monthly));
    let starts: Vec<_> = monthly.iter().map(|r| r.period_start).collect();
    assert_eq!(
        starts,
        [day(2019, 6, 1), day(2019, 10, 1), day(2019, 11, 1)]
    );
    assert_eq!(
        monthly[0],
        ResampledBar {
            period_start: day(2019, 6, 1),
            open: Decimal::from(10),
            high: Decimal::from(15),
            low: Decimal::from(9),
            close: Decimal::from(14),
            volume: 150,
        }
    );
    // Bins of 3 months anchored at June: Jun-Aug, (Sep-Nov): October and November share a bin.
    let quarterly_ish = resample(&bars, spec(Frequency::Monthly, 3));
    let starts: Vec<_> = quarterly_ish.iter().map(|r| r.period_start).collect();
    assert_eq!(starts, [day(2019, 6, 1), day(2019, 9, 1)]);
    assert_eq!(quarterly_ish[1].open, Decimal::from(20));
    assert_eq!(quarterly_ish[1].close, Decimal::from(19));
    assert_eq!(quarterly_ish[1].low, Decimal::from(18));
    assert_eq!(quarterly_ish[1].volume, 15);
    // Weekly: four different weeks, no rows for the empty ones in between.
    assert_eq!(resample(&bars, Resample::every(Frequency::Weekly)).len(), 4);
    // Daily resampling of daily bars is the identity (up to the symbol).
    let daily = resample(&bars, Resample::every(Frequency::Daily));
    assert_eq!(daily.len(), 4);
    for (row, bar) in daily.iter().zip(&bars) {
        assert_eq!(row.period_start, bar.time);
        assert_eq!(
            (row.open, row.close, row.volume),
            (bar.open, bar.close, bar.volume)
        );
    }
}

#[test]
fn empty_input_and_single_bar() {
    let none: Vec<Bar> = Vec::new();
    for frequency in Frequency::ALL {
        assert!(resample(&none, Resample::every(frequency)).is_empty());
    }
    let bar = bar_at(
        Utc.with_ymd_and_hms(2021, 8, 18, 15, 42, 17).unwrap(),
        5,
        7,
        4,
        6,
        42,
    );
    let expected_starts = [
        Utc.with_ymd_and_hms(2021, 8, 18, 15, 42, 0).unwrap(),
        Utc.with_ymd_and_hms(2021, 8, 18, 15, 0, 0).unwrap(),
        day(2021, 8, 18),
        day(2021, 8, 16),
        day(2021, 8, 1),
        day(2021, 7, 1),
        day(2021, 1, 1),
    ];
    for (frequency, start) in Frequency::ALL.into_iter().zip(expected_starts) {
        for interval in [1, 5] {
            let rows = resample(std::slice::from_ref(&bar), spec(frequency, interval));
            assert_eq!(
                rows,
                vec![ResampledBar {
                    period_start: start,
                    open: bar.open,
                    high: bar.high,
                    low: bar.low,
                    close: bar.close,
                    volume: bar.volume,
                }],
                "{frequency} x {interval}"
            );
        }
    }
}

fn minute_bars(start: DateTime<Utc>, count: usize) -> Vec<Bar> {
    (0..count)
        .map(|i| {
            let price = 100 + (i % 7) as i64;
            bar_at(
                start + Duration::minutes(i as i64),
                price,
                price + 1,
                price - 1,
                price,
                1,
            )
        })
        .collect()
}

#[test]
fn intraday_hours_and_minutes() {
    let start = Utc.with_ymd_and_hms(2024, 3, 4, 9, 30, 0).unwrap();
    let bars = minute_bars(start, 150); // 09:30 .. 11:59
    assert_eq!(SeriesKind::of_bars(&bars), SeriesKind::Intraday);
    let hourly = resample(&bars, Resample::every(Frequency::Hourly));
    let starts: Vec<_> = hourly.iter().map(|r| r.period_start).collect();
    let hour = |h| Utc.with_ymd_and_hms(2024, 3, 4, h, 0, 0).unwrap();
    assert_eq!(starts, [hour(9), hour(10), hour(11)]);
    assert_eq!(
        hourly.iter().map(|r| r.volume).collect::<Vec<_>>(),
        [30, 60, 60]
    );
    // Two-hour bins anchored at the 09:00 hour: 09-11, 11-13.
    let two_hours = resample(&bars, spec(Frequency::Hourly, 2));
    assert_eq!(
        two_hours
            .iter()
            .map(|r| (r.period_start, r.volume))
            .collect::<Vec<_>>(),
        [(hour(9), 90), (hour(11), 60)]
    );
    // 15-minute bins anchored at 09:30.
    let quarter_hours = resample(&bars, spec(Frequency::Minute, 15));
    assert_eq!(quarter_hours.len(), 10);
    assert_eq!(quarter_hours[0].period_start, start);
    assert_eq!(quarter_hours[1].period_start, start + Duration::minutes(15));
    assert_eq!(
        SeriesKind::Intraday.format_time(quarter_hours[1].period_start),
        "2024-03-04T09:45:00Z"
    );
    // Minute resampling of minute bars is the identity.
    assert_eq!(
        resample(&bars, Resample::every(Frequency::Minute)).len(),
        150
    );
}

#[test]
fn a_million_minute_bars_in_one_pass() {
    let start = Utc.with_ymd_and_hms(2023, 1, 2, 0, 0, 0).unwrap();
    let bars = minute_bars(start, 1_000_000);
    let started = std::time::Instant::now();
    let hourly = resample(&bars, Resample::every(Frequency::Hourly));
    let daily = resample(&bars, Resample::every(Frequency::Daily));
    let monthly = resample(&bars, Resample::every(Frequency::Monthly));
    eprintln!(
        "resampled 1,000,000 minute bars three times in {:?}",
        started.elapsed()
    );
    assert_eq!(hourly.len(), 16_667); // 1e6 / 60 rounded up
    assert_eq!(daily.len(), 695); // 1e6 / 1440 rounded up
    assert_eq!(monthly.len(), 23);
    assert_eq!(hourly.iter().map(|r| r.volume).sum::<i64>(), 1_000_000);
    assert_eq!(monthly.iter().map(|r| r.volume).sum::<i64>(), 1_000_000);
    assert!(hourly.iter().all(|r| r.high == Decimal::from(107)));
}

#[test]
fn out_of_order_input_does_not_panic() {
    let bars = vec![
        bar_at(day(2020, 5, 1), 1, 1, 1, 1, 1),
        bar_at(day(2020, 1, 1), 2, 2, 2, 2, 1),
        bar_at(day(2020, 5, 2), 3, 3, 3, 3, 1),
    ];
    let rows = resample(&bars, Resample::every(Frequency::Monthly));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r.volume).sum::<i64>(), 3);
}

#[test]
fn resampled_rows_feed_indicators() {
    let monthly = resample(&amzn(), Resample::every(Frequency::Monthly));
    assert_eq!(monthly[5].time(), monthly[5].period_start);
    let sma = bourse_domain::indicators::sma(&monthly, 3).unwrap();
    assert_eq!(sma.len(), 35);
    let expected = (f(monthly[0].close) + f(monthly[1].close) + f(monthly[2].close)) / 3.0;
    assert_close(sma[0].value, expected, 1e-12, "monthly sma");
    assert_eq!(sma[0].time, day(2019, 8, 1));
}
