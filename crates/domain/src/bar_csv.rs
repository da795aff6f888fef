//! Parsing of the OHLCV CSV rows that `bourse import` loads, one line at a time.
//!
//! The format is `symbol,date,open,high,low,close,volume` as exported by common data sources:
//! UTF-8 with or without a byte-order mark, LF or CRLF line ends, `date` either a date
//! (`2019-06-28`, taken as midnight UTC) or a timestamp (RFC 3339, or `YYYY-MM-DD HH:MM:SS`
//! taken as UTC). Prices are parsed as exact decimals; the volume is an integer, also accepted
//! in the `60748000.0` form that spreadsheet and pandas exports produce.
//!
//! Everything here is pure: the importer reads lines (streaming, so files larger than memory are
//! fine), hands each to [`CsvLayout::parse_line`], and adds the line number to any error. Rows are
//! independent, so a bad row can be reported and skipped without losing the rest of the file.

use crate::bar::{Bar, BarError};
use crate::money::parse_decimal;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::str::FromStr;

/// The columns a bar file must have, in their canonical order.
pub const CSV_COLUMNS: [&str; 7] = ["symbol", "date", "open", "high", "low", "close", "volume"];

/// Offending values are quoted in errors up to this many characters, so that a garbage line does
/// not turn into a garbage log line.
const MAX_QUOTED_VALUE: usize = 40;

/// Where each of [`CSV_COLUMNS`] sits in the rows of one file, learnt from its header.
///
/// Columns may come in any order and in any letter case; extra columns (an `adj_close`, say) are
/// ignored rather than refused, since they carry nothing a bar stores. Every row must have exactly
/// as many fields as the header, which catches unquoted thousands separators (`1,234.5`) that
/// would otherwise shift values into the wrong column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLayout {
    /// Field index of each of [`CSV_COLUMNS`], in that order.
    positions: [usize; 7],
    /// Number of fields in the header.
    width: usize,
}

impl Default for CsvLayout {
    fn default() -> Self {
        CsvLayout::standard()
    }
}

impl CsvLayout {
    /// The canonical layout, `symbol,date,open,high,low,close,volume`.
    pub fn standard() -> CsvLayout {
        CsvLayout {
            positions: [0, 1, 2, 3, 4, 5, 6],
            width: CSV_COLUMNS.len(),
        }
    }

    /// Reads the header line. A leading byte-order mark and a trailing `\r` are tolerated.
    pub fn from_header(line: &str) -> Result<CsvLayout, BarError> {
        let line = strip_line(line);
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        if line.trim().is_empty() {
            return Err(BarError::Header("empty header line".into()));
        }
        let names = split_line(line)?;
        let mut positions = [usize::MAX; 7];
        for (index, name) in names.iter().enumerate() {
            let name = name.trim();
            if let Some(column) = CSV_COLUMNS
                .iter()
                .position(|c| c.eq_ignore_ascii_case(name))
            {
                if positions[column] != usize::MAX {
                    return Err(BarError::Header(format!(
                        "column `{}` appears twice",
                        CSV_COLUMNS[column]
                    )));
                }
                positions[column] = index;
            }
        }
        let missing: Vec<&str> = CSV_COLUMNS
            .iter()
            .zip(positions)
            .filter(|(_, p)| *p == usize::MAX)
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            return Err(BarError::Header(format!(
                "missing column(s) {}; expected {}",
                missing.join(", "),
                CSV_COLUMNS.join(",")
            )));
        }
        Ok(CsvLayout {
            positions,
            width: names.len(),
        })
    }

    /// Number of fields every row must have.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Parses one data line (a trailing `\r` or `\n` is ignored). The caller skips blank lines
    /// (see [`is_blank`]) and adds the line number to the error.
    pub fn parse_line(&self, line: &str) -> Result<Bar, BarError> {
        let fields = split_line(strip_line(line))?;
        self.parse_record(&fields)
    }

    /// Parses one record already split into fields (e.g. by the `csv` crate).
    pub fn parse_record<S: AsRef<str>>(&self, fields: &[S]) -> Result<Bar, BarError> {
        if fields.len() != self.width {
            return Err(BarError::FieldCount {
                expected: self.width,
                found: fields.len(),
            });
        }
        let field = |column: usize| fields[self.positions[column]].as_ref();
        parse_fields(&RawBar {
            symbol: field(0),
            date: field(1),
            open: field(2),
            high: field(3),
            low: field(4),
            close: field(5),
            volume: field(6),
        })
    }
}

/// The seven text fields of one row, before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawBar<'a> {
    pub symbol: &'a str,
    pub date: &'a str,
    pub open: &'a str,
    pub high: &'a str,
    pub low: &'a str,
    pub close: &'a str,
    pub volume: &'a str,
}

/// Parses and validates ([`Bar::validate`]) the fields of one row. Surrounding whitespace in each
/// field is ignored.
pub fn parse_fields(raw: &RawBar<'_>) -> Result<Bar, BarError> {
    let symbol = raw.symbol.trim();
    if symbol.is_empty() {
        return Err(BarError::Empty("symbol"));
    }
    let bar = Bar {
        symbol: symbol.to_string(),
        time: parse_bar_time(raw.date)?,
        open: parse_price("open", raw.open)?,
        high: parse_price("high", raw.high)?,
        low: parse_price("low", raw.low)?,
        close: parse_price("close", raw.close)?,
        volume: parse_volume(raw.volume)?,
    };
    bar.validate()?;
    Ok(bar)
}

/// `YYYY-MM-DD` (midnight UTC), RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` taken as UTC.
pub fn parse_bar_time(text: &str) -> Result<DateTime<Utc>, BarError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(BarError::Empty("date"));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(midnight) = date.and_hms_opt(0, 0, 0) {
            return Ok(midnight.and_utc());
        }
    }
    crate::tick::parse_timestamp(text)
        .ok_or_else(|| invalid("date", "a date or an RFC 3339 timestamp", text))
}

/// An exact decimal price (`95.455002`, also `1e2`). The sign is checked by [`Bar::validate`].
pub fn parse_price(field: &'static str, text: &str) -> Result<Decimal, BarError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(BarError::Empty(field));
    }
    parse_decimal(text).ok_or_else(|| invalid(field, "a decimal number", text))
}

/// A whole number of shares: `60748000`, or `60748000.0` (any zero fraction, or an exponent that
/// lands on an integer). `1.5` is refused rather than rounded: a fractional volume means the file
/// is not what we think it is.
pub fn parse_volume(text: &str) -> Result<i64, BarError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(BarError::Empty("volume"));
    }
    let volume = match i64::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            let decimal =
                parse_decimal(text).ok_or_else(|| invalid("volume", "an integer", text))?;
            if !decimal.fract().is_zero() {
                return Err(invalid("volume", "an integer", text));
            }
            decimal
                .to_i64()
                .ok_or_else(|| invalid("volume", "an integer in range", text))?
        }
    };
    if volume < 0 {
        return Err(BarError::Negative {
            field: "volume",
            value: text.to_string(),
        });
    }
    Ok(volume)
}

/// True for a line that holds nothing but whitespace (the empty last line of most files); such
/// lines are skipped, not errors.
pub fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Splits one CSV line into fields (RFC 4180 quoting: `"a ""quoted"", field"`). Fields without
/// quotes are borrowed, so a plain line costs one small vector and no string copies.
pub fn split_line(line: &str) -> Result<Vec<Cow<'_, str>>, BarError> {
    let mut fields = Vec::with_capacity(CSV_COLUMNS.len());
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            // Quoted field: runs to the next quote that is not doubled.
            let mut value = String::new();
            let mut tail = quoted;
            loop {
                let Some(end) = tail.find('"') else {
                    return Err(BarError::Quote);
                };
                value.push_str(&tail[..end]);
                tail = &tail[end + 1..];
                if let Some(after) = tail.strip_prefix('"') {
                    value.push('"');
                    tail = after;
                } else {
                    break;
                }
            }
            fields.push(Cow::Owned(value));
            if tail.is_empty() {
                return Ok(fields);
            }
            match tail.strip_prefix(',') {
                Some(after) => rest = after,
                None => return Err(BarError::Quote),
            }
        } else {
            match rest.find(',') {
                Some(comma) => {
                    fields.push(Cow::Borrowed(&rest[..comma]));
                    rest = &rest[comma + 1..];
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(fields);
                }
            }
        }
    }
}

/// Parses a whole CSV text (header first), yielding each data row with its 1-based line number.
/// Blank lines are skipped. A bad header yields one error for line 1 and nothing else.
///
/// Meant for tests, fixtures and small in-memory inputs; the importer streams lines from the file
/// through [`CsvLayout`] itself.
pub fn parse_csv(text: &str) -> impl Iterator<Item = (usize, Result<Bar, BarError>)> + '_ {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header = lines
        .by_ref()
        .find(|(_, l)| !is_blank(l.strip_prefix('\u{feff}').unwrap_or(l)));
    let (layout, header_error) = match header {
        None => (None, Some((1, BarError::Header("no header line".into())))),
        Some((n, line)) => match CsvLayout::from_header(line) {
            Ok(layout) => (Some(layout), None),
            Err(e) => (None, Some((n, e))),
        },
    };
    let rows = layout
        .map(move |layout| {
            lines
                .filter(|(_, l)| !is_blank(l))
                .map(move |(n, l)| (n, layout.parse_line(l)))
        })
        .into_iter()
        .flatten();
    header_error
        .map(|(n, e)| (n, Err(e)))
        .into_iter()
        .chain(rows)
}

fn strip_line(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn invalid(field: &'static str, expected: &'static str, text: &str) -> BarError {
    let value = if text.chars().count() > MAX_QUOTED_VALUE {
        let mut v: String = text.chars().take(MAX_QUOTED_VALUE).collect();
        v.push('…');
        v
    } else {
        text.to_string()
    };
    BarError::Invalid {
        field,
        expected,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn parses_the_shared_file_format() {
        let layout =
            CsvLayout::from_header("\u{feff}symbol,date,open,high,low,close,volume\r\n").unwrap();
        assert_eq!(layout, CsvLayout::standard());
        let bar = layout
            .parse_line("AMZN,2019-06-28,95.455002,95.647003,94.199997,94.681503,60748000\r\n")
            .unwrap();
        assert_eq!(bar.symbol, "AMZN");
        assert_eq!(
            bar.time,
            Utc.with_ymd_and_hms(2019, 6, 28, 0, 0, 0).unwrap()
        );
        assert_eq!(bar.open, d("95.455002"));
        assert_eq!(bar.open.to_string(), "95.455002");
        assert_eq!(bar.high, d("95.647003"));
        assert_eq!(bar.low, d("94.199997"));
        assert_eq!(bar.close, d("94.681503"));
        assert_eq!(bar.volume, 60_748_000);
    }

    #[test]
    fn accepts_float_volumes_and_timestamps() {
        let layout = CsvLayout::standard();
        let bar = layout
            .parse_line("TSLA,2024-01-02T14:31:00+01:00,1,2,0.5,1.5,60748000.0")
            .unwrap();
        assert_eq!(
            bar.time,
            Utc.with_ymd_and_hms(2024, 1, 2, 13, 31, 0).unwrap()
        );
        assert_eq!(bar.volume, 60_748_000);
        let bar = layout
            .parse_line("TSLA,2024-01-02 14:31:00,1,2,0.5,1.5,6.1e3")
            .unwrap();
        assert_eq!(
            bar.time,
            Utc.with_ymd_and_hms(2024, 1, 2, 14, 31, 0).unwrap()
        );
        assert_eq!(bar.volume, 6100);
        let bar = layout.parse_line("TSLA,2024-01-02Z,1,2,0.5,1.5,1");
        assert!(bar.is_err());
    }

    #[test]
    fn columns_in_any_order_and_extra_columns() {
        let layout =
            CsvLayout::from_header("Date,Open,High,Low,Close,Adj Close,Volume,Symbol").unwrap();
        assert_eq!(layout.width(), 8);
        let bar = layout
            .parse_line("2019-06-28,1,2,0.5,1.5,1.4,10,AMZN")
            .unwrap();
        assert_eq!(bar.symbol, "AMZN");
        assert_eq!(bar.close, d("1.5"));
        assert_eq!(bar.volume, 10);
    }

    #[test]
    fn header_errors_name_the_problem() {
        let err = CsvLayout::from_header("symbol,date,open,high,low,close").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad header: missing column(s) volume; expected symbol,date,open,high,low,close,volume"
        );
        let err =
            CsvLayout::from_header("symbol,date,open,high,low,close,volume,DATE").unwrap_err();
        assert_eq!(err.to_string(), "bad header: column `date` appears twice");
        assert!(CsvLayout::from_header("\u{feff}\r\n").is_err());
    }

    #[test]
    fn row_errors_name_the_problem() {
        let layout = CsvLayout::standard();
        let cases = [
            ("AMZN,2019-06-28,1,2,0.5,1.5", "expected 7 fields, found 6"),
            (
                "AMZN,2019-06-28,1,2,0.5,1,500.5,10",
                "expected 7 fields, found 8",
            ),
            (",2019-06-28,1,2,0.5,1.5,10", "`symbol` is empty"),
            ("AMZN,,1,2,0.5,1.5,10", "`date` is empty"),
            (
                "AMZN,28/06/2019,1,2,0.5,1.5,10",
                "`date` is not a date or an RFC 3339 timestamp: \"28/06/2019\"",
            ),
            (
                "AMZN,2019-06-28,abc,2,0.5,1.5,10",
                "`open` is not a decimal number: \"abc\"",
            ),
            ("AMZN,2019-06-28,1,2,0.5,,10", "`close` is empty"),
            (
                "AMZN,2019-06-28,1,2,0.5,1.5,1.5",
                "`volume` is not an integer: \"1.5\"",
            ),
            ("AMZN,2019-06-28,1,2,0.5,1.5,-3", "`volume` is negative: -3"),
            ("AMZN,2019-06-28,1,2,-0.5,1.5,3", "`low` is negative: -0.5"),
            (
                "AMZN,2019-06-28,1,2,0.5,2.5,3",
                "inconsistent prices: high 2 is below close 2.5",
            ),
            (
                "AMZN,2019-06-28,1,2,1.2,1.5,3",
                "inconsistent prices: low 1.2 is above open 1",
            ),
            (
                "AMZN,2019-06-28,1,2,3,1.5,3",
                "inconsistent prices: high 2 is below low 3",
            ),
            ("\"AMZN,2019-06-28,1,2,0.5,1.5,3", "malformed quoted field"),
            (
                "AMZN,2019-06-28,nan,2,0.5,1.5,3",
                "`open` is not a decimal number: \"nan\"",
            ),
            (
                "AMZN,2019-06-28,1,2,0.5,1.5,99999999999999999999",
                "`volume` is not an integer in range: \"99999999999999999999\"",
            ),
        ];
        for (line, message) in cases {
            let err = layout.parse_line(line).unwrap_err();
            assert_eq!(err.to_string(), message, "line {line:?}");
        }
        let long = format!("AMZN,2019-06-28,{},2,0.5,1.5,3", "9".repeat(100) + "x");
        let err = layout.parse_line(&long).unwrap_err().to_string();
        assert!(err.len() < 100 && err.ends_with("…\""), "{err}");
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(
            split_line(r#"a,"b,c","d ""e""",,"#).unwrap(),
            vec!["a", "b,c", "d \"e\"", "", ""]
        );
        assert_eq!(split_line(r#""a"x,b"#), Err(BarError::Quote));
        let bar = CsvLayout::standard()
            .parse_line(r#""BRK.A","2019-06-28"," 1 ",2,0.5,1.5,"1,0"#)
            .unwrap_err();
        assert_eq!(bar, BarError::Quote);
        let bar = CsvLayout::standard()
            .parse_line(r#""BRK,A","2019-06-28"," 1 ",2,0.5,1.5,"10""#)
            .unwrap();
        assert_eq!(bar.symbol, "BRK,A");
        assert_eq!(bar.volume, 10);
    }

    #[test]
    fn parse_csv_numbers_lines_and_skips_blanks() {
        let text = "\u{feff}symbol,date,open,high,low,close,volume\r\n\r\nA,2019-06-28,1,2,0.5,1.5,1\r\nA,bad,1,2,0.5,1.5,1\r\n\r\n";
        let rows: Vec<_> = parse_csv(text).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 3);
        assert!(rows[0].1.is_ok());
        assert_eq!(rows[1].0, 4);
        assert!(rows[1].1.is_err());
        let rows: Vec<_> = parse_csv("sym,date\nA,1\n").collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 1);
        let rows: Vec<_> = parse_csv("").collect();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].1.is_err());
    }
}
