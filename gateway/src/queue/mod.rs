//! Asynchronous invocations: `/async-function/{name}` stores the request durably and a queue
//! worker invokes it later with retries, dead-lettering, and a callback to `X-Callback-Url`.
//!
//! Two backends implement [`Queue`]: an embedded SQLite database in WAL mode (the default, for
//! `tributary up`) and NATS JetStream (when `nats_url` is given), with a stream and a durable
//! pull consumer.

pub mod jetstream;
pub mod sqlite;
pub mod worker;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use jetstream::JetStreamQueue;
pub use sqlite::SqliteQueue;
pub use worker::{Worker, WorkerConfig};

/// Errors of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The embedded database failed.
    #[error("embedded queue ({path}): {reason}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// NATS failed.
    #[error("NATS JetStream queue ({url}): {reason}")]
    Nats {
        /// The server.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The request is larger than the backend can store.
    #[error(
        "request body of {size} bytes is larger than the queue's limit of {limit} bytes ({what})"
    )]
    TooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        limit: usize,
        /// Where the limit comes from.
        what: &'static str,
    },
}

/// One queued invocation: everything needed to replay the HTTP request later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRequest {
    /// `X-Call-Id`, kept from the caller or generated.
    pub call_id: String,
    /// The function.
    pub function: String,
    /// Its namespace.
    pub namespace: String,
    /// HTTP method.
    pub method: String,
    /// Function-relative path and query, e.g. `/orders?x=1`.
    pub path: String,
    /// Request headers (hop-by-hop and `X-Callback-Url` removed).
    pub headers: Vec<(String, String)>,
    /// Where to POST the result, from `X-Callback-Url`.
    pub callback_url: Option<String>,
    /// Unix milliseconds when it was accepted.
    pub enqueued_at_ms: i64,
    /// The body.
    #[serde(skip)]
    pub body: Bytes,
}

/// A dead-lettered request, as listed by `GET /system/async-dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// `X-Call-Id`.
    pub call_id: String,
    /// The function.
    pub function: String,
    /// Its namespace.
    pub namespace: String,
    /// The last status, if the function answered.
    pub status: Option<u16>,
    /// Why it was given up.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// Unix milliseconds when it was dead-lettered.
    pub failed_at_ms: i64,
    /// Body size in bytes.
    pub body_bytes: usize,
}

/// A request taken from the queue, invisible to other workers while its lease lasts.
pub struct Leased {
    /// The request.
    pub request: QueuedRequest,
    /// 1 for the first delivery, 2 for the second, ...
    pub attempt: u32,
    /// What to do with it when done.
    pub lease: Box<dyn Lease>,
}

/// The worker's answer for a leased request.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Done: remove it from the queue.
    async fn ack(&self) -> Result<(), QueueError>;
    /// Deliver it again after `delay`.
    async fn retry(&self, delay: Duration) -> Result<(), QueueError>;
    /// Give up: store it as a dead letter and remove it from the queue.
    async fn dead_letter(&self, record: DeadLetterRecord) -> Result<(), QueueError>;
    /// Still working on it: keep it leased (JetStream `in_progress`).
    async fn extend(&self) -> Result<(), QueueError>;
}

/// A durable queue of asynchronous invocations.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// `embedded` or `nats`.
    fn backend(&self) -> &'static str;
    /// Stores a request; it is durable when this returns.
    async fn enqueue(&self, request: QueuedRequest) -> Result<(), QueueError>;
    /// Waits for the next deliverable request; `None` once `cancel` fires.
    async fn lease(&self, cancel: &CancellationToken) -> Result<Option<Leased>, QueueError>;
    /// Requests waiting or in flight.
    async fn depth(&self) -> Result<u64, QueueError>;
    /// The newest dead letters, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, QueueError>;
    /// How often a worker must call [`Lease::extend`] during a long call.
    fn lease_refresh(&self) -> Duration;
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
