//! The simulated exchange: a flaky `place_order` (fails 10% of calls, takes 0.5 s otherwise),
//! made idempotent by key, with its ledger in memory. Used in-process by an embedded relay and
//! served over HTTP by `bourse exchange` through [`router`].

use crate::exchange::{Exchange, ExchangeError, PlacementRequest, Receipt};
use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use metrics::{counter, describe_counter};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

pub const SUBMISSIONS_METRIC: &str = "bourse_exchange_submissions_total";
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Describes the exchange's metric and registers its series at 0.
pub fn describe_metrics() {
    describe_counter!(
        SUBMISSIONS_METRIC,
        "Placements submitted to the simulated exchange, by outcome (placed, duplicate, rejected)"
    );
    for outcome in ["placed", "duplicate", "rejected"] {
        counter!(SUBMISSIONS_METRIC, "outcome" => outcome).increment(0);
    }
}

#[derive(Debug, Clone)]
struct Placement {
    order_id: Uuid,
    placed_at: DateTime<Utc>,
    submissions: u64,
}

/// One placement as `GET /placements` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementView {
    pub order_id: Uuid,
    pub placed_at: String,
    /// How many times the key was submitted and answered with this placement (1 + duplicates).
    pub submissions: u64,
}

pub struct SimulatedExchange {
    failure_rate: f64,
    latency: Duration,
    ledger: Mutex<HashMap<String, Placement>>,
}

impl SimulatedExchange {
    /// `failure_rate` in `[0, 1]` (clamped) of first submissions fail at once; the others take
    /// `latency`.
    pub fn new(failure_rate: f64, latency: Duration) -> SimulatedExchange {
        SimulatedExchange {
            failure_rate: if failure_rate.is_finite() {
                failure_rate.clamp(0.0, 1.0)
            } else {
                0.0
            },
            latency,
            ledger: Mutex::new(HashMap::new()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placement>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Places `request` under `key`. A key that was placed before is answered with its first
    /// placement (after the usual latency), is counted in `submissions` and never fails.
    pub async fn submit(
        &self,
        key: &str,
        request: &PlacementRequest,
    ) -> Result<Receipt, ExchangeError> {
        let known = self.ledger().contains_key(key);
        if !known && rand::random::<f64>() < self.failure_rate {
            counter!(SUBMISSIONS_METRIC, "outcome" => "rejected").increment(1);
            return Err(ExchangeError::Rejected(
                "the exchange could not place the order, try again".into(),
            ));
        }
        // Sleeping on the runtime's timer, not a thread: thousands of placements wait at once.
        tokio::time::sleep(self.latency).await;
        let mut ledger = self.ledger();
        let receipt = match ledger.get_mut(key) {
            Some(p) => {
                p.submissions += 1;
                Receipt {
                    order_id: p.order_id,
                    placed_at: p.placed_at,
                    duplicate: true,
                }
            }
            None => {
                let placed_at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros())
                    .unwrap_or_default();
                ledger.insert(
                    key.to_string(),
                    Placement {
                        order_id: request.order_id,
                        placed_at,
                        submissions: 1,
                    },
                );
                Receipt {
                    order_id: request.order_id,
                    placed_at,
                    duplicate: false,
                }
            }
        };
        drop(ledger);
        let outcome = if receipt.duplicate {
            "duplicate"
        } else {
            "placed"
        };
        counter!(SUBMISSIONS_METRIC, "outcome" => outcome).increment(1);
        Ok(receipt)
    }

    /// Every placement, oldest first.
    pub fn placements(&self) -> Vec<PlacementView> {
        let mut all: Vec<Placement> = self.ledger().values().cloned().collect();
        all.sort_by_key(|p| (p.placed_at, p.order_id));
        all.into_iter()
            .map(|p| PlacementView {
                order_id: p.order_id,
                placed_at: p.placed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                submissions: p.submissions,
            })
            .collect()
    }
}

#[async_trait]
impl Exchange for SimulatedExchange {
    async fn place(&self, key: &str, request: &PlacementRequest) -> Result<Receipt, ExchangeError> {
        self.submit(key, request).await
    }
}

/// `POST /placements` and `GET /placements` (docs/api.md, "The exchange").
pub fn router(exchange: Arc<SimulatedExchange>) -> Router {
    Router::new()
        .route("/placements", get(list).post(place))
        .with_state(exchange)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

async fn place(
    State(exchange): State<Arc<SimulatedExchange>>,
    headers: HeaderMap,
    body: Result<Json<PlacementRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "header Idempotency-Key (1 to 255 characters) is required",
        );
    };
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("malformed placement: {}", e.body_text()),
            )
        }
    };
    match exchange.submit(key, &request).await {
        Ok(r) => {
            let status = if r.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let body = json!({
                "order_id": r.order_id,
                "placed_at": r.placed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            });
            (status, Json(body)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn list(State(exchange): State<Arc<SimulatedExchange>>) -> Json<Vec<PlacementView>> {
    Json(exchange.placements())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bourse_domain::order::{OrderType, Side};

    fn request(id: Uuid) -> PlacementRequest {
        PlacementRequest {
            order_id: id,
            instrument: "US0378331005".into(),
            side: Side::Buy,
            kind: OrderType::Market,
            limit_price: None,
            quantity: 1,
        }
    }

    #[tokio::test]
    async fn a_key_is_placed_once_and_repeats_are_counted() {
        let ex = SimulatedExchange::new(0.0, Duration::from_millis(1));
        let id = Uuid::new_v4();
        let first = ex.submit(&id.to_string(), &request(id)).await.unwrap();
        assert!(!first.duplicate);
        let again = ex.submit(&id.to_string(), &request(id)).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.placed_at, first.placed_at);
        let all = ex.placements();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].submissions, 2);
    }

    #[tokio::test]
    async fn failures_happen_at_the_configured_rate_but_never_for_placed_keys() {
        let ex = SimulatedExchange::new(1.0, Duration::ZERO);
        let id = Uuid::new_v4();
        assert!(matches!(
            ex.submit("k", &request(id)).await,
            Err(ExchangeError::Rejected(_))
        ));
        assert!(ex.placements().is_empty());

        let ex = SimulatedExchange::new(0.3, Duration::ZERO);
        let mut failures = 0;
        for _ in 0..2000 {
            let id = Uuid::new_v4();
            if ex.submit(&id.to_string(), &request(id)).await.is_err() {
                failures += 1;
            }
        }
        assert!(
            (450..750).contains(&failures),
            "about 30% of 2000: {failures}"
        );
        // Placed keys never fail, whatever the rate.
        let placed = ex.placements();
        for p in placed.iter().take(50) {
            let r = ex
                .submit(&p.order_id.to_string(), &request(p.order_id))
                .await;
            assert!(r.unwrap().duplicate);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_a_timer_not_a_thread() {
        let ex = Arc::new(SimulatedExchange::new(0.0, Duration::from_millis(500)));
        let started = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let ex = ex.clone();
                tokio::spawn(async move {
                    let id = Uuid::new_v4();
                    ex.submit(&id.to_string(), &request(id)).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(600));
        assert_eq!(ex.placements().len(), 1000);
    }
}
