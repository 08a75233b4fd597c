//! The async queue: `/async-function` requests stored durably and delivered by a worker.
//!
//! Two backends implement the gateway's [`AsyncQueue`](tributary_core::queue::AsyncQueue) and
//! the worker's [`Backend`]: an embedded SQLite database in WAL mode (the default) and NATS
//! JetStream (when `nats_url` is given), with a stream and a durable pull consumer. The worker is
//! a [`Source`](tributary_connector_sdk::Source) on the connector runtime ([`QueueSource`]): each
//! request calls its function directly; connection errors and retryable statuses are retried
//! *through the queue* (the request is put back with the backoff delay or the function's
//! `Retry-After`), per function as its `com.openfaas.retry.*` annotations say; what keeps failing
//! is dead-lettered; the final answer goes to `X-Callback-Url`.
//!
//! ```no_run
//! use tributary_core::settings::defaults;
//! use tributary_queue::{GatewayLink, QueueConfig, Worker, WorkerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let settings: WorkerConfig = defaults();
//! let backend = defaults::<QueueConfig>()
//!     .open(settings.max_inflight, std::path::Path::new("/var/lib/tributary/queue.db"))
//!     .await?;
//! let worker = Worker::new(backend, &settings, &defaults::<GatewayLink>())?;
//! worker.run(tributary_core::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod ack;
pub mod backend;
mod callback;
pub mod config;
pub mod jetstream;
mod metrics;
pub mod source;
pub mod sqlite;
pub mod worker;

pub use backend::{Backend, Lease, Leased};
pub use config::{GatewayLink, QueueConfig, WorkerConfig};
pub use jetstream::JetStreamQueue;
pub use source::QueueSource;
pub use sqlite::SqliteQueue;
pub use worker::Worker;
