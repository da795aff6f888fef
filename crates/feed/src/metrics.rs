//! Feed metrics. Names are part of the contract (docs/operations.md#metrics): dashboards and alerts use them.

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};

pub const TICKS_INGESTED: &str = "bourse_ticks_ingested_total";
pub const TICKS_REJECTED: &str = "bourse_ticks_rejected_total";
pub const INGEST_LAG: &str = "bourse_ingest_lag_seconds";
pub const TARGET_HITS: &str = "bourse_target_hits_total";

/// Reasons a message can be rejected, registered up front so each series exists at 0.
pub const REJECT_REASONS: [&str; 7] = [
    "syntax",
    "not_object",
    "missing_field",
    "invalid_field",
    "too_large",
    "timestamp_out_of_range",
    "refused_by_database",
];

/// Describes the feed metrics and registers them at zero, so that they are scraped (and alerts
/// on them work) before the first tick arrives.
pub fn describe() {
    describe_counter!(
        TICKS_INGESTED,
        "Ticks committed to the database for the first time"
    );
    describe_counter!(
        TICKS_REJECTED,
        "Feed messages rejected (malformed, oversized, out-of-range timestamp, refused by the database) and stored as dead letters, by reason"
    );
    describe_histogram!(
        INGEST_LAG,
        Unit::Seconds,
        "Seconds from a tick's own timestamp to its commit (clamped at 0)"
    );
    describe_counter!(
        TARGET_HITS,
        "Analyst targets flipped to target_hit by a tick"
    );
    counter!(TICKS_INGESTED).increment(0);
    counter!(TARGET_HITS).increment(0);
    for reason in REJECT_REASONS {
        counter!(TICKS_REJECTED, "reason" => reason).increment(0);
    }
    // Touch the histogram so that its HELP line is present from start-up.
    let _ = histogram!(INGEST_LAG);
}
