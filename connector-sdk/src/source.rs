//! The `Source` trait, what a source gets from the runtime ([`SourceContext`]), and how it
//! says what it needs (order, retry policy).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tributary_core::queue::BoxError;

use crate::message::Message;
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
    /// Retry in the connector up to the function's retries with backoff, then dead-letter.
    #[default]
    InProcess,
    /// Retry in the connector and never give up: a failing message holds its key (e.g. its
    /// partition) until it is delivered or the connector stops. For sources configured with
    /// nowhere to dead-letter, where skipping a message would lose it silently.
    UntilDelivered,
    /// One attempt per delivery: a retryable failure is `nack`ed with the backoff delay so the
    /// broker redelivers it later (e.g. SQS visibility), and the message is dead-lettered once
    /// its [`Message::delivery_count`] reaches the function's attempts or a failure is
    /// permanent.
    Redeliver,
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The runtime is shutting down; the source stopped as asked (not a failure).
    #[error("the connector runtime is shutting down")]
    Closed,
    /// The source failed, with a message a user can act on and its cause.
    #[error("{message}")]
    Failed {
        /// What failed and what to do.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl SourceError {
    /// An error with a message a user can act on.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self::Failed {
            message: message.to_string(),
            source: None,
        }
    }

    /// An error with a message a user can act on, caused by `source`.
    pub fn caused(message: impl std::fmt::Display, source: impl Into<BoxError>) -> Self {
        Self::Failed {
            message: message.to_string(),
            source: Some(source.into()),
        }
    }
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> Self {
        Self::caused("the source's I/O failed", e)
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

/// A message [`SourceContext::try_send`] had no room for (or that arrived at shutdown): send
/// it with [`SourceContext::send`], which waits, or hands it back when the runtime is closing.
#[derive(Debug)]
pub struct Full(pub Box<Message>);

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
    /// `max_inflight`: how many permits there are.
    pub(crate) capacity: usize,
    pub(crate) topics: watch::Receiver<Arc<TopicMap>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) registry: prometheus::Registry,
    pub(crate) lag: crate::lag::LagFigures,
}

impl SourceContext {
    /// Hands a message to the runtime. Waits while `max_inflight` messages are in the runtime
    /// (backpressure); fails once the runtime is shutting down (the message is then nacked).
    pub async fn send(&self, message: Message) -> Result<(), Closed> {
        let permit = tokio::select! {
            // Shutdown first: with room and a cancelled token both ready, an unbiased select
            // admitted the message half the time.
            biased;
            _ = self.cancel.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
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

    /// Sends `message` if the runtime has room for it now, without waiting: for a source on a
    /// thread of its own, which then needs no runtime round trip per message. A message there
    /// is no room for is given back ([`Full`]) to [`Self::send`] when the source may wait.
    pub fn try_send(&self, message: Message) -> Result<(), Full> {
        // At shutdown, `send` refuses and hands the message back.
        if self.cancel.is_cancelled() {
            return Err(Full(Box::new(message)));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err(Full(Box::new(message)));
        };
        // The channel holds as many messages as there are permits: with one, there is room.
        self.tx
            .try_send(Admitted { message, permit })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => {
                    Full(Box::new(a.message))
                }
            })
    }

    /// Whether the runtime has room for another message now (a [`Self::send`] would not wait).
    pub fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// How many messages the runtime would take now without waiting.
    pub fn room(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits until the runtime has room for another message, without taking it; fails once the
    /// runtime is shutting down. For sources that must keep serving their broker while full.
    pub async fn ready(&self) -> Result<(), Closed> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Closed),
            permit = self.permits.acquire() => permit.map(drop).map_err(|_| Closed),
        }
    }

    /// Waits until the runtime has room for a batch of messages: a quarter of `max_inflight`
    /// (at least one), without taking it; fails once the runtime is shutting down. A source on
    /// its own thread that waits for this instead of [`Self::ready`] when full is woken once
    /// per batch, not once per finished message.
    pub async fn ready_for_batch(&self) -> Result<(), Closed> {
        let batch = u32::try_from((self.capacity / 4).max(1)).unwrap_or(u32::MAX);
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Closed),
            permits = self.permits.acquire_many(batch) => permits.map(drop).map_err(|_| Closed),
        }
    }

    /// Tells the gateway's autoscaler how many messages wait on `topic` (Kafka consumer lag,
    /// SQS messages visible, JetStream pending); the latest figure is sent every few seconds.
    pub fn report_lag(&self, topic: &str, waiting: u64) {
        self.lag.set(topic, waiting);
    }

    /// A handle for reporting lag from another thread or callback (the same figures as
    /// [`Self::report_lag`]).
    pub fn lag_figures(&self) -> crate::lag::LagFigures {
        self.lag.clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::NoAck;

    fn context(capacity: usize) -> (SourceContext, mpsc::Receiver<Admitted>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (_, topics) = watch::channel(Arc::new(TopicMap::default()));
        let ctx = SourceContext {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            topics,
            cancel: CancellationToken::new(),
            registry: prometheus::Registry::new(),
            lag: crate::lag::LagFigures::default(),
        };
        (ctx, rx)
    }

    #[tokio::test]
    async fn try_send_admits_while_there_is_room_and_hands_the_rest_back() {
        let (ctx, mut rx) = context(2);
        ctx.try_send(Message::new("t", "one", NoAck)).expect("room");
        ctx.try_send(Message::new("t", "two", NoAck)).expect("room");
        let Err(Full(back)) = ctx.try_send(Message::new("t", "three", NoAck)) else {
            panic!("admitted beyond the capacity");
        };
        assert_eq!(&back.payload[..], b"three");
        assert!(!ctx.has_room());
        // A finished message frees its permit: there is room again.
        let first = rx.recv().await.expect("admitted");
        assert_eq!(&first.message.payload[..], b"one");
        drop(first);
        ctx.try_send(*back).expect("room again");
        assert_eq!(
            &rx.recv().await.expect("second").message.payload[..],
            b"two"
        );
        assert_eq!(
            &rx.recv().await.expect("third").message.payload[..],
            b"three"
        );
    }

    #[tokio::test]
    async fn at_shutdown_try_send_admits_nothing_and_send_hands_the_message_back() {
        let (ctx, mut rx) = context(2);
        ctx.cancel.cancel();
        let Err(Full(back)) = ctx.try_send(Message::new("t", "late", NoAck)) else {
            panic!("admitted at shutdown");
        };
        assert!(matches!(ctx.send(*back).await, Err(Closed)));
        assert!(rx.try_recv().is_err(), "nothing admitted");
        // With room left, waiting for room fails too: the source stops taking messages.
        assert!(ctx.has_room());
        assert!(matches!(ctx.ready().await, Err(Closed)));
        assert!(matches!(ctx.ready_for_batch().await, Err(Closed)));
    }
}
