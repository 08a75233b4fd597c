//! librdkafka callbacks: logs, errors, statistics (consumer lag) and rebalances (a final commit
//! before partitions are released).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use tributary_core::Chain;

use crate::metrics::KafkaMetrics;
use crate::offsets::{Partition, Tracker};

/// librdkafka callbacks: logs, errors, statistics (lag) and rebalances.
pub(crate) struct Hooks {
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) metrics: KafkaMetrics,
    pub(crate) grace: Duration,
    pub(crate) last_error: std::sync::Mutex<String>,
    /// Where the lag per topic goes for the gateway's autoscaler.
    pub(crate) lag: tributary_connector_sdk::lag::LagFigures,
}

impl Hooks {
    /// Logs an error once until a different one happens (librdkafka repeats them).
    pub(crate) fn report(&self, error: String) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != error {
            tracing::warn!(%error, "Kafka client error (librdkafka keeps retrying)");
            *last = error;
        }
    }

    pub(crate) fn clear_error(&self) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !last.is_empty() {
            tracing::info!("Kafka client recovered");
            last.clear();
        }
    }
}

impl ClientContext for Hooks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            L::Notice | L::Info => tracing::debug!(target: "librdkafka", fac, "{message}"),
            L::Debug => tracing::trace!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.report(format!("{error}: {reason}"));
    }

    fn stats(&self, stats: Statistics) {
        let points: BTreeMap<Partition, i64> = self.tracker.commit_points().into_iter().collect();
        for (topic, t) in &stats.topics {
            // Only this consumer's partitions have a commit point: its share of the group's lag.
            let mut waiting: Option<u64> = None;
            for (id, p) in &t.partitions {
                if *id < 0 || p.hi_offset < 0 {
                    continue;
                }
                let base = points
                    .get(&(topic.clone(), *id))
                    .copied()
                    .or((p.committed_offset >= 0).then_some(p.committed_offset));
                if let Some(base) = base {
                    self.metrics.lag(topic, *id, p.hi_offset - base);
                    *waiting.get_or_insert(0) += u64::try_from(p.hi_offset - base).unwrap_or(0);
                }
            }
            if let Some(waiting) = waiting {
                self.lag.set(topic, waiting);
            }
        }
    }
}

impl ConsumerContext for Hooks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let (points, unfinished) = self.tracker.revoke(&partitions, self.grace);
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                grace = ?self.grace,
                "partitions revoked with messages still in flight; they stay uncommitted and the next owner redelivers them"
            );
        }
        if !points.is_empty() && !consumer.assignment_lost() {
            match commit(consumer, &points, CommitMode::Sync) {
                Ok(()) => {
                    for ((topic, partition), offset) in &points {
                        self.metrics.committed(topic, *partition, *offset);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "final commit before releasing partitions failed; the next owner may redeliver some messages")
                }
            }
        }
        self.metrics.rebalance("revoked", partitions.len());
        tracing::info!(partitions = %list(&partitions), "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<Partition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for p in &partitions {
                    self.tracker.assign(p.clone());
                }
                self.metrics.rebalance("assigned", partitions.len());
                tracing::info!(partitions = %list(&partitions), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %Chain(&e), "offset commit failed; it is retried with the next one");
        }
    }
}

fn list(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn commit(
    consumer: &BaseConsumer<Hooks>,
    points: &[(Partition, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in points {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, mode)
}
