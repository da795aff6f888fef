//! The live feed. Messages arrive from MQTT (or, embedded, from an in-process simulated market),
//! go through one [`ingest::Ingestor`] that parses, batches and commits them, and only then are
//! acknowledged to the broker: a tick acknowledged is a tick stored.

pub mod ingest;
pub mod market;
pub mod metrics;
pub mod mqtt;
pub mod retention;
pub mod streamer;

pub use ingest::{Ack, Delivery, FeedEvent, Ingestor, IngestorConfig};
pub use market::Market;
pub use mqtt::{MqttConfig, MqttUrl};
