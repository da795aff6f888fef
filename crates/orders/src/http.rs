//! The exchange over HTTP: the client of `bourse exchange` (or of any exchange that speaks the
//! same contract: `POST /placements` with `Idempotency-Key`, 201 placed, 200 placed before).

use crate::exchange::{Exchange, ExchangeError, PlacementRequest, Receipt};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

pub struct HttpExchange {
    client: reqwest::Client,
    placements_url: String,
}

#[derive(Deserialize)]
struct ReceiptBody {
    order_id: Uuid,
    placed_at: DateTime<Utc>,
}

impl HttpExchange {
    /// `base_url` like `http://exchange:8002`; every placement is bounded by `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<HttpExchange, ExchangeError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("bourse-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ExchangeError::Unreachable(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(HttpExchange {
            client,
            placements_url: format!("{}/placements", base_url.trim_end_matches('/')),
        })
    }
}

#[async_trait]
impl Exchange for HttpExchange {
    async fn place(&self, key: &str, request: &PlacementRequest) -> Result<Receipt, ExchangeError> {
        let response = self
            .client
            .post(&self.placements_url)
            .header("Idempotency-Key", key)
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ExchangeError::Timeout
                } else {
                    ExchangeError::Unreachable(e.without_url().to_string())
                }
            })?;
        let status = response.status();
        let duplicate = match status.as_u16() {
            201 => false,
            200 => true,
            429 | 500..=599 => {
                let text = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| status.to_string());
                return Err(ExchangeError::Rejected(format!(
                    "{}: {message}",
                    status.as_u16()
                )));
            }
            _ => return Err(ExchangeError::Protocol(format!("status {status}"))),
        };
        let body: ReceiptBody = response.json().await.map_err(|e| {
            if e.is_timeout() {
                ExchangeError::Timeout
            } else {
                ExchangeError::Protocol(format!("bad receipt: {}", e.without_url()))
            }
        })?;
        if body.order_id != request.order_id {
            return Err(ExchangeError::Protocol(format!(
                "receipt for order {} instead of {}",
                body.order_id, request.order_id
            )));
        }
        Ok(Receipt {
            order_id: body.order_id,
            placed_at: body.placed_at,
            duplicate,
        })
    }
}
