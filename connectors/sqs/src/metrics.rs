//! SQS metrics, per queue: received, deleted, visibility extensions, receive errors, depth.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The SQS connector's own metrics, beside the SDK's.
#[derive(Clone)]
pub struct SqsMetrics {
    pub(crate) received: IntCounterVec,
    pub(crate) deleted: IntCounterVec,
    pub(crate) extensions: IntCounterVec,
    pub(crate) receive_errors: IntCounterVec,
    pub(crate) dead_letters: IntCounterVec,
    pub(crate) depth: IntGaugeVec,
}

impl SqsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let q = &["queue"];
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), q);
        let m = Self {
            received: counter("sqs_messages_received_total", "Messages received")?,
            deleted: counter(
                "sqs_messages_deleted_total",
                "Messages deleted after delivery or dead-lettering",
            )?,
            extensions: counter(
                "sqs_visibility_extensions_total",
                "Visibility timeouts extended while a message was in the connector",
            )?,
            receive_errors: counter(
                "sqs_receive_errors_total",
                "ReceiveMessage calls that failed",
            )?,
            dead_letters: counter(
                "sqs_dead_letters_sent_total",
                "Messages sent to the dead-letter queue",
            )?,
            depth: IntGaugeVec::new(
                Opts::new(
                    "sqs_queue_depth",
                    "ApproximateNumberOfMessages: messages waiting in the queue",
                ),
                q,
            )?,
        };
        registry.register(Box::new(m.received.clone()))?;
        registry.register(Box::new(m.deleted.clone()))?;
        registry.register(Box::new(m.extensions.clone()))?;
        registry.register(Box::new(m.receive_errors.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.depth.clone()))?;
        Ok(m)
    }
}
