//! The RPC envelope shared by the HTTP route and the AMQP queue: request
//! `{"symbol": "aapl.us", "kind": "daily"?}`, reply `{"data": {...}}` or
//! `{"error": {"code", "message"}}`. One definition so both transports stay identical. Over
//! AMQP a message may also carry a batch: an array of requests, answered by an array of replies
//! in the same order (see [`crate::amqp`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ErrorBody, Kind, QuoteClient, QuoteError};

/// A request to the quote service. Unknown fields are refused: the client never sends any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcRequest {
    pub symbol: String,
    /// `quote` (stooq, the default when absent) or `daily` (AlphaVantage).
    #[serde(default)]
    pub kind: Kind,
}

/// A reply: exactly one of `data` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Data(T),
    Error(ErrorBody),
}

impl<T> From<Result<T, QuoteError>> for Reply<T> {
    fn from(result: Result<T, QuoteError>) -> Self {
        match result {
            Ok(data) => Reply::Data(data),
            Err(e) => Reply::Error(e.to_body()),
        }
    }
}

impl<T> Reply<T> {
    pub fn into_result(self) -> Result<T, QuoteError> {
        match self {
            Reply::Data(data) => Ok(data),
            Reply::Error(body) => Err(body.into()),
        }
    }
}

/// Answers one request with `client`: the reply's JSON and, when it is an error, the error (for
/// the HTTP status).
pub async fn answer(
    client: &dyn QuoteClient,
    request: &RpcRequest,
) -> (Vec<u8>, Option<QuoteError>) {
    match request.kind {
        Kind::Quote => encode(client.quote(&request.symbol).await),
        Kind::Daily => encode(client.daily(&request.symbol).await),
    }
}

/// Serializes a reply; a serialization failure (not expected for our types) becomes an
/// `unavailable` error reply rather than a panic.
pub fn encode<T: Serialize>(result: Result<T, QuoteError>) -> (Vec<u8>, Option<QuoteError>) {
    let error = result.as_ref().err().cloned();
    match serde_json::to_vec(&Reply::from(result)) {
        Ok(bytes) => (bytes, error),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a quote reply");
            let err = QuoteError::Unavailable("quote service failed to answer".into());
            let bytes = serde_json::to_vec(&Reply::<()>::Error(err.to_body())).unwrap_or_default();
            (bytes, Some(err))
        }
    }
}

/// Reads a reply received from a remote quote service.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, QuoteError> {
    serde_json::from_slice::<Reply<T>>(bytes)
        .map_err(|e| {
            tracing::warn!(error = %e, "unreadable reply from the quote service");
            QuoteError::BadUpstream("quote service answered unreadably".into())
        })?
        .into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quote;

    #[test]
    fn request_kind_defaults_to_quote() {
        let r: RpcRequest = serde_json::from_str(r#"{"symbol": "aapl.us"}"#).unwrap();
        assert_eq!(r.kind, Kind::Quote);
        let r: RpcRequest = serde_json::from_str(r#"{"symbol": "ibm", "kind": "daily"}"#).unwrap();
        assert_eq!(r.kind, Kind::Daily);
    }

    #[test]
    fn replies_have_the_contract_shape() {
        let (bytes, err) = encode::<Quote>(Err(QuoteError::NotFound("Unknown symbol: X".into())));
        assert_eq!(err.map(|e| e.code()), Some("not_found"));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "not_found", "message": "Unknown symbol: X"}})
        );
        assert_eq!(
            decode::<Quote>(&bytes).unwrap_err(),
            QuoteError::NotFound("Unknown symbol: X".into())
        );
        let (bytes, _) = encode(Ok(5u8));
        assert_eq!(bytes, br#"{"data":5}"#);
        assert_eq!(decode::<u8>(&bytes), Ok(5));
        assert_eq!(decode::<u8>(b"nope").unwrap_err().code(), "bad_upstream");
    }
}
