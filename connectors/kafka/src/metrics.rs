//! Kafka metrics, per partition: consumed, committed offset and consumer lag.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry};
use tributary_core::metrics::Registrar;

/// The Kafka connector's own metrics, beside the SDK's.
#[derive(Clone)]
pub struct KafkaMetrics {
    consumed: IntCounterVec,
    committed: IntGaugeVec,
    lag: IntGaugeVec,
    rebalances: IntCounterVec,
    dead_letters: IntCounterVec,
}

impl KafkaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = Registrar(registry);
        let tp = &["topic", "partition"];
        Ok(Self {
            consumed: r.counter_vec(
                "kafka_messages_consumed_total",
                "Messages taken from Kafka",
                tp,
            )?,
            committed: r.int_gauge_vec(
                "kafka_committed_offset",
                "The group's committed offset: the next message to consume after a restart",
                tp,
            )?,
            lag: r.int_gauge_vec(
                "kafka_consumer_lag",
                "Messages between the committed offset and the partition's high watermark",
                tp,
            )?,
            rebalances: r.counter_vec(
                "kafka_rebalances_total",
                "Partitions assigned and revoked",
                &["kind"],
            )?,
            dead_letters: r.counter_vec(
                "kafka_dead_letters_produced_total",
                "Messages produced to the dead-letter topic",
                &["topic"],
            )?,
        })
    }

    /// The count of messages taken from a partition: looked up once per partition by the
    /// consumer thread, which keeps it.
    pub(crate) fn consumed(&self, topic: &str, partition: i32) -> IntCounter {
        self.consumed
            .with_label_values(&[topic, &partition.to_string()])
    }

    pub(crate) fn committed(&self, topic: &str, partition: i32, offset: i64) {
        self.committed
            .with_label_values(&[topic, &partition.to_string()])
            .set(offset);
    }

    pub(crate) fn lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }

    pub(crate) fn rebalance(&self, kind: &str, partitions: usize) {
        self.rebalances
            .with_label_values(&[kind])
            .inc_by(partitions as u64);
    }

    pub(crate) fn dead_letter(&self, topic: &str) {
        self.dead_letters.with_label_values(&[topic]).inc();
    }
}
