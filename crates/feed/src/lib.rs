//! The live feed. Messages arrive from MQTT (or, embedded, from an in-process simulated market),
//! go through one [`ingest::Ingestor`] that parses, batches and commits them, and only then are
//! acknowledged to the broker: a tick acknowledged is a tick stored.
//!
//! Main types: [`Ingestor`] (batches, commits, then acknowledges and publishes [`FeedEvent`]s),
//! [`mqtt`] (the QoS 1 consumer with a persistent session, [`MqttConfig`]), [`Market`] (the
//! simulated market of the embedded mode and of `bourse streamer`), [`streamer`].
//!
//! ```
//! use bourse_feed::Market;
//!
//! // Three demo stocks (CIB, Edita, Hamada Inc), a fixed random seed, round robin.
//! let mut market = Market::new(3, Some(7));
//! let message = market.next_message(chrono::Utc::now());
//! let tick = bourse_domain::Tick::parse(&message, chrono::Utc::now()).unwrap();
//! assert_eq!(tick.name, "CIB");
//! ```

pub mod ingest;
pub mod market;
pub mod metrics;
pub mod mqtt;
pub mod retention;
pub mod streamer;

pub use ingest::{Ack, Delivery, FeedEvent, Ingestor, IngestorConfig};
pub use market::Market;
pub use mqtt::{MqttConfig, MqttUrl};
