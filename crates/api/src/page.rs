//! Paging of list answers. Every list is bounded: a `limit` (a default, a documented maximum;
//! above it a 400, as DRF and Alpaca refuse it, never a silent clamp) and a keyset cursor. When
//! rows remain, the answer carries `Link: <same query, cursor moved>; rel="next"`; following the
//! links yields every row once, in order. Keyset (a cursor on the sort key) rather than OFFSET,
//! so that a page costs the same wherever it is and rows committed meanwhile are not skipped.

use crate::ApiError;
use axum::http::{header, HeaderValue};
use axum::response::Response;

/// Rows per page of the series and `/stocks` (settings `BOURSE_PAGE_DEFAULT`, `BOURSE_PAGE_MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub default: u32,
    pub max: u32,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            default: 5_000,
            max: 10_000,
        }
    }
}

impl Paging {
    /// Checks `1 <= default <= max` (a configuration error otherwise).
    pub fn new(default: u32, max: u32) -> Result<Paging, String> {
        if default >= 1 && default <= max {
            Ok(Paging { default, max })
        } else {
            Err(format!(
                "page_default ({default}) must be between 1 and page_max ({max})"
            ))
        }
    }

    /// The page size asked for, checked against this bound.
    pub fn limit(&self, asked: Option<u32>) -> Result<u32, ApiError> {
        check_limit(asked, self.default, self.max)
    }
}

/// `asked`, or `default` when absent; 400 unless `1 <= limit <= max`.
pub fn check_limit(asked: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = asked.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        )))
    }
}

/// Adds `Link: <path?query>; rel="next"` to `response`; `query` is encoded here.
pub fn link_next(response: &mut Response, path: &str, query: &[(&str, String)]) {
    let mut encoded = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in query {
        encoded.append_pair(key, value);
    }
    let link = format!("<{path}?{}>; rel=\"next\"", encoded.finish());
    if let Ok(v) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(header::LINK, v);
    }
}
