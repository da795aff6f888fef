//! The order metrics (docs/operations.md#metrics). [`describe`] registers every series at 0 so that
//! dashboards and alerts see them from start-up, in `serve` and in `relay`.

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

/// Orders by what happened to them: `created` (API), `placed` and `failed` (relay).
pub const ORDERS: &str = "bourse_orders_total";
/// Orders waiting in the outbox.
pub const OUTBOX_DEPTH: &str = "bourse_outbox_depth";
/// Age of the oldest order waiting in the outbox.
pub const OUTBOX_OLDEST_AGE: &str = "bourse_outbox_oldest_age_seconds";
/// Placement attempts at the exchange by outcome: `placed`, `duplicate` (placed before, e.g. by
/// a relay that died before recording it), `error`.
pub const PLACEMENT_ATTEMPTS: &str = "bourse_placement_attempts_total";

pub fn describe() {
    describe_counter!(ORDERS, "Orders created, placed and failed, by status");
    describe_gauge!(OUTBOX_DEPTH, "Orders in the outbox, waiting to be placed");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest order waiting in the outbox"
    );
    describe_counter!(
        PLACEMENT_ATTEMPTS,
        "Placement attempts at the exchange, by outcome (placed, duplicate, error)"
    );
    for status in ["created", "placed", "failed"] {
        counter!(ORDERS, "status" => status).increment(0);
    }
    for outcome in ["placed", "duplicate", "error"] {
        counter!(PLACEMENT_ATTEMPTS, "outcome" => outcome).increment(0);
    }
    gauge!(OUTBOX_DEPTH).set(0.0);
    gauge!(OUTBOX_OLDEST_AGE).set(0.0);
}

pub fn order_created() {
    counter!(ORDERS, "status" => "created").increment(1);
}

pub(crate) fn order_finished(status: &'static str) {
    counter!(ORDERS, "status" => status).increment(1);
}

pub(crate) fn attempt(outcome: &'static str) {
    counter!(PLACEMENT_ATTEMPTS, "outcome" => outcome).increment(1);
}

pub(crate) fn outbox(depth: i64, oldest_age_seconds: f64) {
    gauge!(OUTBOX_DEPTH).set(depth as f64);
    gauge!(OUTBOX_OLDEST_AGE).set(oldest_age_seconds);
}
