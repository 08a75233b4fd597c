//! The Kafka connector: a consumer-group member that invokes the functions subscribed to each
//! record's topic, at least once.
//!
//! - **Commits after delivery.** Per partition, the committed offset only moves up to the lowest
//!   message whose outcome is not final (delivered or dead-lettered), so concurrency never
//!   commits past an unfinished message. A connector killed mid-stream redelivers at most the
//!   messages that were in flight (plus the few finished since the last commit, a few ms).
//! - **Order.** One message at a time per partition by default (`order=partition`); per key
//!   within a partition (`order=key`); or none (`order=none`). Partitions run concurrently up to
//!   `max_inflight`.
//! - **Failures.** With `dead_letter_topic`, a message whose retries are exhausted is produced
//!   there with `x-dead-letter-*` and `x-original-*` headers, then committed. Without one, a
//!   failing message holds its partition, retrying with backoff, until it is delivered: nothing
//!   is skipped silently.
//! - **Rebalances.** Revoked partitions take no new messages; in-flight ones get
//!   `rebalance_grace` to finish, and the final offsets are committed before the partition is
//!   released.
//!
//! ```no_run
//! use tributary_connector_sdk::{Connector, ControllerConfig, shutdown_signal};
//! use tributary_kafka::{KafkaConfig, KafkaSource};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = KafkaConfig {
//!     broker_hosts: vec!["127.0.0.1:9092".into()],
//!     topics: vec!["orders".into()],
//!     dead_letter_topic: Some("orders-dlt".into()),
//!     ..KafkaConfig::default()
//! };
//! Connector::new(ControllerConfig::from_env()?)
//!     .run(KafkaSource::new(config)?, shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod dead_letter;
mod headers;
mod hooks;
pub mod metrics;
pub mod offsets;
pub mod source;

pub use config::{InitialOffset, KafkaConfig, Order, SaslMechanism, Security, parse_option};
pub use source::KafkaSource;

/// The connector's name, sent as `X-Connector`.
pub const CONNECTOR_NAME: &str = "kafka-connector";

/// Errors setting the Kafka connector up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A setting is unusable; the message names it.
    #[error("{0}")]
    Config(String),
    /// A file named by a setting cannot be read.
    #[error("cannot read {what} {}", path.display())]
    Read {
        /// The setting.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Kafka client cannot be created.
    #[error("cannot create the {what}")]
    Client {
        /// Which client.
        what: &'static str,
        /// What librdkafka said.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
