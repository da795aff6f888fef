//! The one error type of the quote service. Its `code()` travels over HTTP and AMQP so that a
//! remote caller rebuilds the same error the service saw, and the API maps it to one status.

use serde::{Deserialize, Serialize};

/// Why a quote could not be had. Messages are safe to show to API clients: upstream text is kept
/// only where the contract says so (AlphaVantage "Error Message"/"Note"/"Information", stooq's
/// throttle text); transport details go to the log, never into the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The provider does not know the symbol.
    #[error("{0}")]
    NotFound(String),
    /// The provider's own quota is exhausted.
    #[error("{0}")]
    Throttled(String),
    /// The provider answered something we cannot use (non-200, unparsable body).
    #[error("{0}")]
    BadUpstream(String),
    /// The provider or the quote service could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The provider or the quote service did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The request itself is wrong (empty or malformed symbol); no upstream call was made.
    #[error("{0}")]
    BadRequest(String),
}

impl QuoteError {
    /// Stable machine-readable code, as sent in `{"error": {"code", "message"}}`.
    pub fn code(&self) -> &'static str {
        match self {
            QuoteError::NotFound(_) => "not_found",
            QuoteError::Throttled(_) => "throttled",
            QuoteError::BadUpstream(_) => "bad_upstream",
            QuoteError::Unavailable(_) => "unavailable",
            QuoteError::Timeout(_) => "timeout",
            QuoteError::BadRequest(_) => "bad_request",
        }
    }

    /// Every code, e.g. to pre-register metric series.
    pub const CODES: [&'static str; 6] = [
        "not_found",
        "throttled",
        "bad_upstream",
        "unavailable",
        "timeout",
        "bad_request",
    ];

    /// HTTP status the API (and the internal HTTP route) answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            QuoteError::NotFound(_) => 404,
            QuoteError::Throttled(_) => 503,
            QuoteError::BadUpstream(_) => 502,
            QuoteError::Unavailable(_) => 503,
            QuoteError::Timeout(_) => 504,
            QuoteError::BadRequest(_) => 400,
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            QuoteError::NotFound(m)
            | QuoteError::Throttled(m)
            | QuoteError::BadUpstream(m)
            | QuoteError::Unavailable(m)
            | QuoteError::Timeout(m)
            | QuoteError::BadRequest(m) => m,
        }
    }

    /// Rebuilds an error received from a remote quote service. An unknown code means the remote
    /// speaks a newer protocol than we do; it is an upstream problem from our point of view.
    pub fn from_code(code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        match code {
            "not_found" => QuoteError::NotFound(message),
            "throttled" => QuoteError::Throttled(message),
            "unavailable" => QuoteError::Unavailable(message),
            "timeout" => QuoteError::Timeout(message),
            "bad_request" => QuoteError::BadRequest(message),
            _ => QuoteError::BadUpstream(message),
        }
    }

    /// The wire form of this error.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_owned(),
            message: self.message().to_owned(),
        }
    }
}

/// `{"code": "...", "message": "..."}`, the error half of the RPC reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl From<ErrorBody> for QuoteError {
    fn from(body: ErrorBody) -> Self {
        QuoteError::from_code(&body.code, body.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_statuses() {
        let all = [
            (QuoteError::NotFound("a".into()), 404),
            (QuoteError::Throttled("b".into()), 503),
            (QuoteError::BadUpstream("c".into()), 502),
            (QuoteError::Unavailable("d".into()), 503),
            (QuoteError::Timeout("e".into()), 504),
            (QuoteError::BadRequest("f".into()), 400),
        ];
        for (err, status) in all {
            assert_eq!(err.http_status(), status);
            assert!(QuoteError::CODES.contains(&err.code()));
            assert_eq!(QuoteError::from(err.to_body()), err);
        }
    }

    #[test]
    fn unknown_code_is_bad_upstream() {
        assert_eq!(
            QuoteError::from_code("martian", "x"),
            QuoteError::BadUpstream("x".into())
        );
    }
}
