//! Logs (tracing; text or JSON) and the Prometheus recorder.

use crate::config::{Log, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::Write;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

pub fn init_logging(config: &Log) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = config.log_format == LogFormat::Json;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || EscapeControls {
            inner: std::io::stderr(),
            ansi,
            json,
        })
        .with_ansi(ansi);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the global Prometheus recorder with histogram buckets suited to each metric.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("bourse_http_request_duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full("bourse_ingest_lag_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                2.5, 5.0, 30.0, 300.0,
            ],
        )?
        .install_recorder()?;
    // Histograms are kept in buckets that need periodic upkeep to stay bounded.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Writes each log event with the control characters inside it escaped (a newline becomes `\n`),
/// so that a logged value from outside (a feed payload, a header) can neither forge a line nor
/// send terminal escapes. The formatter hands over one whole event per write; its own final
/// newline stays, and so do its colour codes when the terminal gets them. JSON already escapes
/// C0 controls but leaves C1 controls and U+2028/U+2029 raw (valid JSON, yet line breaks to
/// some viewers): those get JSON escapes (`\u2028`), which keep the line valid JSON.
struct EscapeControls<W> {
    inner: W,
    ansi: bool,
    json: bool,
}

impl<W: Write> Write for EscapeControls<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (buf, false),
        };
        let mut out = escape_controls(&String::from_utf8_lossy(body), self.ansi, self.json);
        if newline {
            out.push('\n');
        }
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `text` with control characters (C0, DEL, C1, and the Unicode line and paragraph separators)
/// written as escapes (JSON's `\uXXXX` with `json`); tabs stay, and with `ansi` so do colour
/// sequences (`ESC [ digits ; m`).
fn escape_controls(text: &str, ansi: bool, json: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let colour = ansi.then(|| sgr_len(rest)).flatten();
        if let Some(len) = colour {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        if c != '\t' && (c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
            if json {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            } else {
                out.extend(c.escape_default());
            }
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length of the colour sequence `text` starts with, if it does.
fn sgr_len(text: &str) -> Option<usize> {
    let params = text.strip_prefix("\u{1b}[")?;
    let digits = params
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (params.as_bytes().get(digits) == Some(&b'm')).then_some(2 + digits + 1)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_but_colours_and_tabs_stay() {
        let forged =
            "payload=x\n2026-01-01T00:00:00Z  INFO forged\r\u{1b}]0;title\u{7}\u{85}\u{2028}";
        let escaped = escape_controls(forged, false, false);
        assert!(!escaped.chars().any(|c| c.is_control()), "{escaped}");
        assert_eq!(
            escaped,
            "payload=x\\n2026-01-01T00:00:00Z  INFO forged\\r\\u{1b}]0;title\\u{7}\\u{85}\\u{2028}"
        );
        assert_eq!(escape_controls("a\tb", false, false), "a\tb");
        assert_eq!(
            escape_controls("{\"a\":\"\\u001b x\u{85}\u{2028}\"}", false, true),
            r#"{"a":"\u001b x\u0085\u2028"}"#
        );
        assert_eq!(
            escape_controls("\u{1b}[2mx\u{1b}[0m \u{1b}[31;1my\u{1b}[K", true, false),
            "\u{1b}[2mx\u{1b}[0m \u{1b}[31;1my\\u{1b}[K"
        );
    }
}
