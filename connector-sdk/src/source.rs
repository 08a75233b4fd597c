//! The `Source` trait and what flows through it: messages and their acknowledgement handles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::topic_map::TopicMap;

/// Whether the runtime must keep messages of the same key in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// Any order; every message may run concurrently.
    #[default]
    Unordered,
    /// Messages with the same [`Message::key`] are delivered one after another, in the order
    /// the source sent them; different keys run concurrently.
    PerKey,
}

/// What the runtime does when a function fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryPolicy {
    /// Retry in the connector up to `max_retries` times with backoff, then dead-letter.
    #[default]
    InProcess,
    /// Retry in the connector and never give up: a failing message holds its key (e.g. its
    /// partition) until it is delivered or the connector stops. For sources configured with
    /// nowhere to dead-letter, where skipping a message would lose it silently.
    UntilDelivered,
    /// One attempt per delivery: a retryable failure is `nack`ed with the backoff delay so the
    /// broker redelivers it later (e.g. SQS visibility), and the message is dead-lettered once
    /// its [`Message::delivery_count`] exceeds `max_retries` or a failure is permanent.
    Redeliver,
}

/// One function's final failure, as reported to the source when a message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedInvocation {
    /// The function address (`name` or `name.namespace`).
    pub function: String,
    /// The last HTTP status, if the function answered.
    pub status: Option<u16>,
    /// What went wrong last.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
}

/// Why a message is being dead-lettered: every function that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message's topic.
    pub topic: String,
    /// The functions that failed for good.
    pub failures: Vec<FailedInvocation>,
}

impl DeadLetter {
    fn join(&self, sep: &str, f: impl Fn(&FailedInvocation) -> String) -> String {
        self.failures.iter().map(f).collect::<Vec<_>>().join(sep)
    }

    /// The failed functions, comma-separated (for dead-letter headers and attributes).
    pub fn functions(&self) -> String {
        self.join(",", |x| x.function.clone())
    }

    /// Their last HTTP statuses (`none` when there was no answer), comma-separated.
    pub fn statuses(&self) -> String {
        self.join(",", |x| {
            x.status
                .map_or_else(|| "none".to_owned(), |s| s.to_string())
        })
    }

    /// Attempts made per function, comma-separated.
    pub fn attempts(&self) -> String {
        self.join(",", |x| x.attempts.to_string())
    }

    /// `function: last error` per function, `; `-separated.
    pub fn errors(&self) -> String {
        self.join("; ", |x| format!("{}: {}", x.function, x.error))
    }
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic {:?}:", self.topic)?;
        for x in &self.failures {
            let status = x
                .status
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
            write!(
                f,
                " {} failed ({status}, {} attempts: {});",
                x.function, x.attempts, x.error
            )?;
        }
        Ok(())
    }
}

/// What the runtime tells the source about a message once its outcome is final.
///
/// Exactly one method is called per message. `ack` means every function succeeded; `nack` means
/// the message was not (fully) delivered and should be redelivered (e.g. at shutdown), after
/// `retry_after` if given; `dead_letter` means retries are exhausted or a failure is permanent.
#[async_trait]
pub trait Acknowledge: Send + 'static {
    /// Every function succeeded: commit, delete or ack the message.
    async fn ack(self: Box<Self>);
    /// Not delivered: make the message available again.
    async fn nack(self: Box<Self>, retry_after: Option<Duration>);
    /// Failed for good: send it to the dead-letter destination, then acknowledge it.
    async fn dead_letter(self: Box<Self>, letter: DeadLetter);
}

/// For sources with nothing to acknowledge (cron ticks, NATS core): every call is a no-op.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAck;

#[async_trait]
impl Acknowledge for NoAck {
    async fn ack(self: Box<Self>) {}
    async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {}
    async fn dead_letter(self: Box<Self>, _letter: DeadLetter) {}
}

/// A message from a source.
pub struct Message {
    /// The topic; functions whose `topic` annotation names it are invoked.
    pub topic: String,
    /// The request body.
    pub payload: Bytes,
    /// Headers passed to the functions (e.g. `X-Kafka-Partition`).
    pub headers: Vec<(String, String)>,
    /// Ordering key, honoured when the source asks for [`DeliveryOrder::PerKey`].
    pub key: Option<String>,
    /// Invoke only these functions instead of every subscriber of the topic (e.g. cron).
    pub targets: Option<Vec<String>>,
    /// Source metadata handed to response subscribers (e.g. partition and offset).
    pub context: Arc<BTreeMap<String, String>>,
    /// How many times the broker has delivered this message, counting this one (1 = first);
    /// used by [`RetryPolicy::Redeliver`].
    pub delivery_count: u32,
    pub(crate) ack: Box<dyn Acknowledge>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("key", &self.key)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Message {
    /// A message for `topic` with `payload`, acknowledged through `ack`.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, ack: impl Acknowledge) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            headers: Vec::new(),
            key: None,
            targets: None,
            context: Arc::default(),
            delivery_count: 1,
            ack: Box::new(ack),
        }
    }

    /// Adds a header for the functions.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Invokes only `functions` rather than every subscriber of the topic.
    pub fn with_targets(mut self, functions: Vec<String>) -> Self {
        self.targets = Some(functions);
        self
    }

    /// Sets how many times the broker has delivered the message (1 = first).
    pub fn with_delivery_count(mut self, count: u32) -> Self {
        self.delivery_count = count.max(1);
        self
    }

    /// Sets the source context handed to response subscribers.
    pub fn with_context(mut self, context: BTreeMap<String, String>) -> Self {
        self.context = Arc::new(context);
        self
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The runtime is shutting down; the source stopped as asked (not a failure).
    #[error("the connector runtime is shutting down")]
    Closed,
    /// The source failed, with a message a user can act on.
    #[error("{0}")]
    Failed(String),
}

impl SourceError {
    /// An error with a message a user can act on.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// The runtime is shutting down and takes no more messages.
#[derive(Debug, thiserror::Error)]
#[error("the connector runtime is shutting down and takes no more messages")]
pub struct Closed;

impl From<Closed> for SourceError {
    fn from(_: Closed) -> Self {
        Self::Closed
    }
}

/// A message with the in-flight permit it holds until its outcome is final.
pub(crate) struct Admitted {
    pub(crate) message: Message,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// What a source gets from the runtime: a way to send messages (with backpressure), the topic
/// map, and the shutdown signal.
pub struct SourceContext {
    pub(crate) tx: mpsc::Sender<Admitted>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) topics: watch::Receiver<Arc<TopicMap>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) registry: prometheus::Registry,
}

impl SourceContext {
    /// Hands a message to the runtime. Waits while `max_inflight` messages are in the runtime
    /// (backpressure); fails once the runtime is shutting down.
    pub async fn send(&self, message: Message) -> Result<(), Closed> {
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.ok(),
            _ = self.cancel.cancelled() => None,
        };
        let Some(permit) = permit else {
            // Refused: hand the message back so the broker redelivers it.
            message.ack.nack(None).await;
            return Err(Closed);
        };
        if let Err(mpsc::error::SendError(admitted)) =
            self.tx.send(Admitted { message, permit }).await
        {
            admitted.message.ack.nack(None).await;
            return Err(Closed);
        }
        Ok(())
    }

    /// Whether the runtime has room for another message now (a [`Self::send`] would not wait).
    pub fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// Waits until the runtime has room for another message, without taking it; fails once the
    /// runtime is shutting down. For sources that must keep serving their broker while full.
    pub async fn ready(&self) -> Result<(), Closed> {
        tokio::select! {
            permit = self.permits.acquire() => permit.map(drop).map_err(|_| Closed),
            _ = self.cancel.cancelled() => Err(Closed),
        }
    }

    /// Topics some function subscribes to now.
    pub fn topics(&self) -> Vec<String> {
        self.topics.borrow().topics()
    }

    /// The current topic map.
    pub fn topic_map(&self) -> Arc<TopicMap> {
        self.topics.borrow().clone()
    }

    /// A receiver that sees every new topic map (to follow deploys and removals).
    pub fn topic_changes(&self) -> watch::Receiver<Arc<TopicMap>> {
        self.topics.clone()
    }

    /// Cancelled when the connector shuts down: stop taking messages from the broker.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The Prometheus registry the connector's metrics live in, for source-specific metrics.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }
}

/// Where messages come from: a broker, a clock, a webhook. Implement this and call [`crate::run`].
#[async_trait]
pub trait Source: Send + 'static {
    /// The connector's name, sent as `X-Connector` (e.g. `kafka-connector`).
    fn name(&self) -> &str;

    /// Whether messages of one key must stay in order.
    fn order(&self) -> DeliveryOrder {
        DeliveryOrder::Unordered
    }

    /// What happens when a function fails: retry here then dead-letter (the default), retry
    /// until delivered, or hand the message back for the broker to redeliver.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::InProcess
    }

    /// Produces messages through `ctx.send` until the source ends or `ctx.cancelled()` fires.
    /// Returning `Ok` lets the runtime finish in-flight messages and stop.
    async fn run(self, ctx: SourceContext) -> Result<(), SourceError>
    where
        Self: Sized;
}
