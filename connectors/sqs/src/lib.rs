//! The SQS connector: long-polls SQS queues and invokes the functions subscribed to each
//! queue's topic, at least once.
//!
//! - **Delete after delivery.** A message is deleted (in `DeleteMessageBatch` calls of up to
//!   ten) only once every function's outcome is final.
//! - **Heartbeat.** While a message is in the connector (running or waiting behind its FIFO
//!   group), its visibility is extended every half `visibility_timeout`, so a long call is not
//!   delivered twice.
//! - **Retries through the queue.** A retryable failure does not sleep holding the message: its
//!   visibility is changed to the backoff delay and SQS redelivers it. When its
//!   `ApproximateReceiveCount` exceeds `max_retries` (or a failure is permanent) it goes to
//!   `dead_letter_queue_url` with `x-dead-letter-*` attributes and is deleted; without one it
//!   is left to the queue's own redrive policy (it keeps coming back until SQS moves it).
//! - **FIFO.** Messages of one `MessageGroupId` are delivered one after another; groups run
//!   concurrently.
//!
//! ```no_run
//! use tributary_connector_sdk::{Connector, ControllerConfig, shutdown_signal};
//! use tributary_sqs::{SqsConfig, SqsSource};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SqsConfig {
//!     queue_urls: vec!["https://sqs.eu-west-1.amazonaws.com/123456789012/orders".into()],
//!     ..SqsConfig::default()
//! };
//! let source = SqsSource::connect(config).await?; // checks every queue is reachable
//! Connector::new(ControllerConfig::from_env()?)
//!     .run(source, shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

mod ack;
pub mod config;
pub mod dead_letter;
pub mod metrics;
pub mod source;

pub use config::SqsConfig;
pub use source::SqsSource;

/// The connector's name, sent as `X-Connector`.
pub const CONNECTOR_NAME: &str = "sqs-connector";

/// Errors setting the SQS connector up.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// A setting is unusable; the message names it.
    #[error("{0}")]
    Config(String),
    /// A queue cannot be used: missing, not permitted, bad credentials, unreachable endpoint.
    #[error("cannot use queue {queue_url}: {reason}")]
    Queue {
        /// The queue.
        queue_url: String,
        /// What SQS or the client said, with every detail the AWS error carries.
        reason: String,
        /// The AWS error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
