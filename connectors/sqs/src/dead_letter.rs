//! The dead-letter queue: a failed message is sent there, with attributes saying why, before it
//! is deleted from its own queue.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use tributary_connector_sdk::DeadLetter;

use crate::metrics::SqsMetrics;
use crate::source::describe;

/// Attribute names set on a dead letter.
pub mod attributes {
    /// The functions that failed, comma-separated.
    pub const FUNCTION: &str = "x-dead-letter-function";
    /// Their last HTTP status (`none` when there was no answer), comma-separated.
    pub const STATUS: &str = "x-dead-letter-status";
    /// The last error of each.
    pub const ERROR: &str = "x-dead-letter-error";
    /// How many times SQS had delivered the message.
    pub const RECEIVE_COUNT: &str = "x-dead-letter-receive-count";
    /// The queue the message came from.
    pub const QUEUE_URL: &str = "x-original-queue-url";
    /// Its message id there.
    pub const MESSAGE_ID: &str = "x-original-message-id";
}

/// SQS allows ten message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// The dead-letter queue.
pub(crate) struct DeadLetterQueue {
    pub(crate) client: Client,
    pub(crate) url: String,
    pub(crate) fifo: bool,
    pub(crate) metrics: SqsMetrics,
}

/// The message being dead-lettered, as it was received.
pub(crate) struct Original<'a> {
    pub(crate) queue_url: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) receive_count: u32,
    pub(crate) group: Option<&'a str>,
    pub(crate) body: &'a str,
    pub(crate) attributes: &'a [(String, MessageAttributeValue)],
}

impl DeadLetterQueue {
    /// Sends the message here; `false` if that failed.
    pub(crate) async fn send(&self, original: &Original<'_>, letter: &DeadLetter) -> bool {
        let ours = [
            (attributes::FUNCTION, letter.functions()),
            (attributes::STATUS, letter.statuses()),
            (attributes::ERROR, letter.errors()),
            (
                attributes::RECEIVE_COUNT,
                original.receive_count.to_string(),
            ),
            (attributes::QUEUE_URL, original.queue_url.to_owned()),
            (attributes::MESSAGE_ID, original.message_id.to_owned()),
        ];
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(original.body);
        let mut count = 0;
        for (k, v) in ours {
            if let Ok(value) = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(if v.is_empty() { "-".to_owned() } else { v })
                .build()
            {
                request = request.message_attributes(k, value);
                count += 1;
            }
        }
        for (k, v) in original.attributes {
            if count >= MAX_ATTRIBUTES {
                tracing::debug!(attribute = %k, "dead letter has too many attributes for SQS: dropped");
                continue;
            }
            request = request.message_attributes(k, v.clone());
            count += 1;
        }
        if self.fifo {
            request = request
                .message_group_id(original.group.unwrap_or("dead-letters"))
                .message_deduplication_id(original.message_id);
        }
        match request.send().await {
            Ok(_) => {
                self.metrics
                    .dead_letters
                    .with_label_values(&[original.queue_url])
                    .inc();
                true
            }
            Err(e) => {
                tracing::warn!(dead_letter_queue_url = %self.url, error = %describe(e), "cannot send the dead letter; the message stays in its queue and comes back");
                false
            }
        }
    }
}
