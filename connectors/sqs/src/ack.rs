//! Settling one received message: delete it (batched), make it visible again after a delay, or
//! dead-letter it; its visibility heartbeat stops when it is settled or dropped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageAttributeValue;
use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;
use tributary_connector_sdk::{Acknowledge, DeadLetter};

use crate::dead_letter::Original;
use crate::source::{Queue, describe, secs};

/// Settles one received message.
pub(crate) struct SqsAck {
    pub(crate) queue: Arc<Queue>,
    pub(crate) receipt: String,
    pub(crate) message_id: String,
    pub(crate) receive_count: u32,
    pub(crate) group: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) attributes: Vec<(String, MessageAttributeValue)>,
    pub(crate) deletes: mpsc::UnboundedSender<String>,
    /// Stops the heartbeat when the message is settled (or the handle dropped).
    pub(crate) _heartbeat: DropGuard,
}

impl SqsAck {
    fn delete(self) {
        // The deleter outlives every handle; a failed send means shutdown already flushed,
        // and the message is simply delivered again.
        let _ = self.deletes.send(self.receipt);
    }

    async fn set_visibility(&self, after: Duration) {
        if let Err(e) = self
            .queue
            .client
            .change_message_visibility()
            .queue_url(&self.queue.url)
            .receipt_handle(&self.receipt)
            .visibility_timeout(secs(after))
            .send()
            .await
        {
            tracing::warn!(queue_url = %self.queue.url, error = %describe(e), "cannot change visibility; the message comes back when its current timeout ends");
        }
    }
}

#[async_trait]
impl Acknowledge for SqsAck {
    async fn ack(self: Box<Self>) {
        self.delete();
    }

    /// Makes the message visible again after `retry_after` (at once when `None`), so SQS
    /// redelivers it without the connector holding it.
    async fn nack(self: Box<Self>, retry_after: Option<Duration>) {
        self.set_visibility(retry_after.unwrap_or_default()).await;
    }

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        match self.queue.dead_letters.clone() {
            Some(dlq) => {
                let original = Original {
                    queue_url: &self.queue.url,
                    message_id: &self.message_id,
                    receive_count: self.receive_count,
                    group: self.group.as_deref(),
                    body: self.body.as_deref().unwrap_or_default(),
                    attributes: &self.attributes,
                };
                if dlq.send(&original, &letter).await {
                    tracing::info!(queue_url = %self.queue.url, message_id = %self.message_id, dead_letter_queue_url = %dlq.url, "message dead-lettered");
                    self.delete();
                }
            }
            None => {
                tracing::warn!(queue_url = %self.queue.url, message_id = %self.message_id, receive_count = self.receive_count, %letter,
                    "no dead_letter_queue_url: the message is left in its queue for the queue's redrive policy");
            }
        }
    }
}
