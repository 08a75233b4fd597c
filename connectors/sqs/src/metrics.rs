//! SQS metrics, per queue: received, deleted, visibility extensions, receive errors, depth.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use tributary_core::metrics::Registrar;

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
        let r = Registrar(registry);
        let q = &["queue"];
        Ok(Self {
            received: r.counter_vec("sqs_messages_received_total", "Messages received", q)?,
            deleted: r.counter_vec(
                "sqs_messages_deleted_total",
                "Messages deleted after delivery or dead-lettering",
                q,
            )?,
            extensions: r.counter_vec(
                "sqs_visibility_extensions_total",
                "Visibility timeouts extended while a message was in the connector",
                q,
            )?,
            receive_errors: r.counter_vec(
                "sqs_receive_errors_total",
                "ReceiveMessage calls that failed",
                q,
            )?,
            dead_letters: r.counter_vec(
                "sqs_dead_letters_sent_total",
                "Messages sent to the dead-letter queue",
                q,
            )?,
            depth: r.int_gauge_vec(
                "sqs_queue_depth",
                "ApproximateNumberOfMessages: messages waiting in the queue",
                q,
            )?,
        })
    }
}
