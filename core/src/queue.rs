//! The async queue as the gateway sees it: `/async-function` stores a [`QueuedRequest`] through
//! [`AsyncQueue`]; the queue crate implements it (embedded SQLite, NATS JetStream) and runs the
//! worker that delivers the requests.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An error with its cause, from any backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backend failed; `queue` names it and where it lives.
    #[error("{queue}: {what}")]
    Backend {
        /// E.g. `embedded queue (/var/lib/tributary/queue.db)`.
        queue: String,
        /// What was being done.
        what: String,
        /// The backend's error.
        #[source]
        source: BoxError,
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

impl QueuedRequest {
    /// Its function as metrics and the queue's depth name it: `name.namespace`.
    pub fn label(&self) -> String {
        format!("{}.{}", self.function, self.namespace)
    }
}

/// A dead-lettered request, as listed by `GET /system/async-dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// The dead letter's id in its queue (row id or stream sequence), for redrive and delete;
    /// filled in when listed.
    #[serde(default)]
    pub id: u64,
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

/// What a queue holds now, as `GET /system/async-queue` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// `embedded` or `nats`.
    pub backend: String,
    /// Requests waiting or in flight.
    pub depth: u64,
    /// Requests being delivered now.
    pub in_flight: u64,
    /// Age of the oldest request waiting or in flight, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// Dead letters kept.
    pub dead_letters: u64,
}

/// A durable queue of asynchronous invocations, as the gateway uses it.
#[async_trait]
pub trait AsyncQueue: Send + Sync + 'static {
    /// `embedded` or `nats`.
    fn backend(&self) -> &'static str;
    /// Stores a request; it is durable when this returns.
    async fn enqueue(&self, request: QueuedRequest) -> Result<(), QueueError>;
    /// Requests waiting or in flight.
    async fn depth(&self) -> Result<u64, QueueError>;
    /// Requests waiting or in flight per function (`name.namespace`), for the autoscaler;
    /// backends that cannot count them so return nothing.
    async fn depth_by_function(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, QueueError> {
        Ok(std::collections::BTreeMap::new())
    }
    /// The newest dead letters, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, QueueError>;
    /// Depth, in flight, oldest age and dead letters.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
    /// Puts dead letter `id` back on the queue as a new request (attempts start again) and
    /// removes it from the dead letters; false when there is no such dead letter.
    async fn redrive(&self, id: u64) -> Result<bool, QueueError>;
    /// Removes dead letter `id`; false when there is no such dead letter.
    async fn delete_dead_letter(&self, id: u64) -> Result<bool, QueueError>;
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

/// `time` in Unix milliseconds (0 before 1970).
pub fn unix_ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn unix_ms_counts_from_1970_and_is_zero_before() {
        assert_eq!(
            super::unix_ms(UNIX_EPOCH + Duration::from_millis(1_500)),
            1_500
        );
        assert_eq!(super::unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn a_queued_request_is_labelled_name_dot_namespace() {
        let request = super::QueuedRequest {
            call_id: "c".into(),
            function: "resize".into(),
            namespace: "images".into(),
            method: "POST".into(),
            path: "/".into(),
            headers: Vec::new(),
            callback_url: None,
            enqueued_at_ms: 0,
            body: bytes::Bytes::new(),
        };
        assert_eq!(request.label(), "resize.images");
    }
}
