//! The quote service over RabbitMQ RPC: requests on the durable queue `bourse.quotes`
//! (`reply_to` + `correlation_id`), replies in the [`crate::wire`] envelope. RabbitMQ lets any
//! number of quote-service replicas share the queue, and the API replicas need no address for
//! them.
//!
//! Both sides manage their own connection: the server reconnects with backoff until it is shut
//! down; the client reconnects lazily on the next call, and every call is bounded by its timeout,
//! connecting included, so a missing broker or server never makes a request hang.

mod client;
mod server;

pub use client::AmqpQuoteClient;
pub use server::{AmqpServer, REFUSED_METRIC};

use lapin::ConnectionProperties;

use crate::QuoteError;

/// RabbitMQ's direct reply-to pseudo-queue: replies come back on the caller's channel without
/// a queue per client to declare and clean up.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Connection properties naming the connection, so operators (and tests) can tell them apart.
pub(crate) fn properties(name: String) -> ConnectionProperties {
    ConnectionProperties::default().with_connection_name(name.into())
}

/// A broker failure as the callers see it: the quote service is unreachable.
pub(crate) fn broker_error(context: &'static str, error: lapin::Error) -> QuoteError {
    tracing::warn!(error = %error, "AMQP {context} failed");
    QuoteError::Unavailable("quote service is unreachable (message broker)".into())
}
