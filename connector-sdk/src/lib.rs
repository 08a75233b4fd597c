//! The contract every Tributary connector is written against, ours and users'.
//!
//! A connector implements [`Source`] (where messages come from) and calls [`run`]. The SDK does
//! the rest: it builds a topic map from the gateway's `topic` annotations and rebuilds it every
//! `rebuild_interval`; invokes every function subscribed to a message's topic (fan-out), with
//! bounded concurrency and backpressure, in order per key when asked; retries connection errors
//! and 408/429/500/502/503/504 with exponential backoff, full jitter and `Retry-After` (per
//! function, the OpenFaaS annotations `com.openfaas.retry.attempts|codes|min_wait|max_wait`
//! override the connector's settings); and calls the message's [`Acknowledge`] handle only once
//! every function's outcome is final (`ack`), exhausted (`dead_letter`) or interrupted by shutdown
//! (`nack`). A handle dropped unsettled nacks.
//!
//! With the `test-util` feature, [`test_util`] starts a real gateway with a recording function,
//! so a connector's tests can assert what the functions received (see `tests/stdin_example.rs`).
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

pub mod ack;
pub mod batch;
pub mod config;
mod deliver;
mod dispatch;
pub mod event;
pub mod filter;
pub mod invoker;
pub mod lag;
pub mod message;
pub mod metrics;
mod options;
mod policy;
pub mod runtime;
pub mod source;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod topic_map;

pub use ack::{Acknowledge, NoAck};
pub use config::{ConfigError, ControllerConfig, ControllerConfigBuilder};
pub use event::EventInfo;
pub use invoker::{Delivery, InvocationOutcome};
pub use message::{DeadLetter, DirectCall, FailedInvocation, Message};
pub use metrics::ConnectorMetrics;
pub use runtime::{Connector, ConnectorError, ResponseSubscriber, run};
pub use source::{Closed, DeliveryOrder, Full, RetryPolicy, Source, SourceContext, SourceError};
pub use topic_map::{TopicMap, TopicMapSync};
pub use tributary_core::client::ClientError;
pub use tributary_core::model::FunctionStatus;
pub use tributary_core::retry::{RETRYABLE_STATUS, RetrySettings};
pub use tributary_core::shutdown_signal;
