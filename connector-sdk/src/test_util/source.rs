//! An in-memory source fed by the test, whose acknowledgements the test can watch.

use std::time::Duration;

use crate::{
    Acknowledge, ControllerConfig, DeadLetter, DeliveryOrder, Message, Source, SourceContext,
    SourceError,
};
use async_trait::async_trait;
use tokio::sync::mpsc;

/// What the runtime did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckEvent {
    /// Acknowledged.
    Ack,
    /// Handed back for redelivery.
    Nack,
    /// Dead-lettered, with the reason.
    DeadLetter(DeadLetter),
}

/// An acknowledgement handle that reports to a channel under the message's id; a redelivering
/// one also sends its message to the source again when it is nacked, as a broker would.
pub struct TestAck {
    id: String,
    tx: mpsc::UnboundedSender<(String, AckEvent)>,
    redeliver: Option<(String, mpsc::Sender<Message>)>,
}

#[async_trait]
impl Acknowledge for TestAck {
    async fn ack(self: Box<Self>) {
        let _ = self.tx.send((self.id.clone(), AckEvent::Ack));
    }
    async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {
        let _ = self.tx.send((self.id.clone(), AckEvent::Nack));
        if let Some((topic, source)) = &self.redeliver {
            let again = Message::new(
                topic.clone(),
                self.id.clone(),
                TestAck {
                    id: self.id.clone(),
                    tx: self.tx.clone(),
                    redeliver: self.redeliver.clone(),
                },
            );
            let _ = source.send(again).await;
        }
    }
    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        let _ = self
            .tx
            .send((self.id.clone(), AckEvent::DeadLetter(letter)));
    }
}

/// A source fed by the test through a channel.
pub struct ChannelSource {
    rx: mpsc::Receiver<Message>,
    order: DeliveryOrder,
}

#[async_trait]
impl Source for ChannelSource {
    fn name(&self) -> &str {
        "test-connector"
    }

    fn order(&self) -> DeliveryOrder {
        self.order
    }

    async fn run(mut self, ctx: SourceContext) -> Result<(), SourceError> {
        let cancel = ctx.cancelled();
        loop {
            let next = tokio::select! {
                m = self.rx.recv() => m,
                _ = cancel.cancelled() => return Ok(()),
            };
            match next {
                Some(m) => ctx.send(m).await?,
                None => return Ok(()),
            }
        }
    }
}

/// The test's ends: where to send messages and where acknowledgements arrive.
pub struct Feed {
    /// Send messages here.
    pub tx: mpsc::Sender<Message>,
    /// Acknowledgements arrive here as (id, event).
    pub acks: mpsc::UnboundedReceiver<(String, AckEvent)>,
    ack_tx: mpsc::UnboundedSender<(String, AckEvent)>,
}

impl Feed {
    /// A message with id `id` (also its payload) for `topic`.
    pub fn message(&self, topic: &str, id: &str) -> Message {
        self.build(topic, id, None)
    }

    /// Like [`Feed::message`], but sent to the source again each time it is nacked.
    pub fn redelivered(&self, topic: &str, id: &str) -> Message {
        self.build(topic, id, Some((topic.to_owned(), self.tx.clone())))
    }

    fn build(
        &self,
        topic: &str,
        id: &str,
        redeliver: Option<(String, mpsc::Sender<Message>)>,
    ) -> Message {
        Message::new(
            topic,
            id.to_owned(),
            TestAck {
                id: id.to_owned(),
                tx: self.ack_tx.clone(),
                redeliver,
            },
        )
    }

    /// Sends a message with id `id` for `topic`.
    pub async fn send(&self, topic: &str, id: &str) {
        self.tx
            .send(self.message(topic, id))
            .await
            .expect("source is running");
    }

    /// Waits for `n` acknowledgement events (at most `limit`).
    pub async fn events(&mut self, n: usize, limit: Duration) -> Vec<(String, AckEvent)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.acks.recv()).await {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(_) => panic!(
                    "only {} of {n} acknowledgements within {limit:?}: {out:?}",
                    out.len()
                ),
            }
        }
        out
    }
}

/// A channel source with the given ordering, and the test's ends of it.
pub fn channel_source(order: DeliveryOrder) -> (ChannelSource, Feed) {
    let (tx, rx) = mpsc::channel(1024);
    let (ack_tx, acks) = mpsc::unbounded_channel();
    (ChannelSource { rx, order }, Feed { tx, acks, ack_tx })
}

/// A connector configuration for tests: fast rebuilds and retries, metrics off.
pub fn test_config(gateway_url: &str) -> crate::ControllerConfigBuilder {
    ControllerConfig::builder()
        .gateway_url(gateway_url.to_owned())
        .rebuild_interval(Duration::from_millis(300))
        .initial_retry_wait(Duration::from_millis(20))
        .max_retry_wait(Duration::from_millis(300))
        .metrics_port(0u16)
        .print_response(false)
}
