//! The contract every Tributary connector is written against, ours and users'.
//!
//! A connector implements [`Source`] (where messages come from) and calls [`run`]. The SDK does
//! the rest: it builds a topic map from the gateway's `topic` annotations and rebuilds it every
//! `rebuild_interval`; invokes every function subscribed to a message's topic (fan-out), with
//! bounded concurrency and backpressure, in order per key when asked; retries connection errors
//! and 408/429/500/502/503/504 with exponential backoff, full jitter and `Retry-After`; and calls
//! the message's [`Acknowledge`] handle only once every function's outcome is final (`ack`),
//! exhausted (`dead_letter`) or interrupted by shutdown (`nack`).
//!
//! A complete connector that sends each line of stdin to the functions subscribed to `lines`:
//!
//! ```no_run
//! use tokio::io::AsyncBufReadExt;
//! use tributary_connector_sdk::{ControllerConfig, Message, NoAck, Source, SourceContext, SourceError};
//!
//! struct Stdin;
//!
//! #[async_trait::async_trait]
//! impl Source for Stdin {
//!     fn name(&self) -> &str {
//!         "stdin-connector"
//!     }
//!
//!     async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
//!         let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
//!         while let Some(line) = lines.next_line().await? {
//!             ctx.send(Message::new("lines", line, NoAck)).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = ControllerConfig::from_env()?; // gateway_url, max_retries, ...
//!     tributary_connector_sdk::run(config, Stdin, tributary_connector_sdk::shutdown_signal()).await?;
//!     Ok(())
//! }
//! ```

pub mod config;
pub mod invoker;
pub mod metrics;
pub mod runtime;
pub mod source;
pub mod topic_map;

pub use config::{ConfigError, ControllerConfig, ControllerConfigBuilder};
pub use invoker::{Delivery, InvocationOutcome, RETRYABLE_STATUS};
pub use metrics::ConnectorMetrics;
pub use runtime::{Connector, ConnectorError, ResponseSubscriber, run, shutdown_signal};
pub use source::{
    Acknowledge, Closed, DeadLetter, DeliveryOrder, FailedInvocation, Message, NoAck, RetryPolicy,
    Source, SourceContext, SourceError,
};
pub use topic_map::{Controller, FunctionInfo, SyncError, TopicMap};
