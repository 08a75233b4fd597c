//! The dead-letter topic: failed messages are produced there, with headers saying why, before
//! their offset is committed.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::DeadLetter;
use tributary_core::Chain;

use crate::KafkaError;
use crate::config::KafkaConfig;
use crate::metrics::KafkaMetrics;

/// Header names set on a dead letter (the original headers are kept too).
pub mod headers {
    /// The functions that failed, comma-separated.
    pub const FUNCTION: &str = "x-dead-letter-function";
    /// Their last HTTP status (`none` when there was no answer), comma-separated.
    pub const STATUS: &str = "x-dead-letter-status";
    /// Attempts made, comma-separated.
    pub const ATTEMPTS: &str = "x-dead-letter-attempts";
    /// The last error of each.
    pub const ERROR: &str = "x-dead-letter-error";
    /// The topic the message came from.
    pub const TOPIC: &str = "x-original-topic";
    /// Its partition.
    pub const PARTITION: &str = "x-original-partition";
    /// Its offset.
    pub const OFFSET: &str = "x-original-offset";
}

/// What is kept of a message in case it is dead-lettered.
pub(crate) struct Original {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) payload: Bytes,
}

/// Produces dead letters.
pub(crate) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    metrics: KafkaMetrics,
    cancel: CancellationToken,
}

impl DeadLetters {
    pub(crate) fn new(
        config: &KafkaConfig,
        topic: &str,
        metrics: KafkaMetrics,
        cancel: CancellationToken,
    ) -> Result<Self, KafkaError> {
        let producer = config
            .producer_config()?
            .create()
            .map_err(|source| KafkaError::Client {
                what: "dead-letter producer",
                source,
            })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            metrics,
            cancel,
        })
    }

    /// Produces the dead letter, retrying until the broker has it; `false` if shutdown came
    /// first (the message then stays uncommitted and is redelivered).
    pub(crate) async fn send(
        &self,
        original: &Original,
        letter: &DeadLetter,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> bool {
        let (function, status) = (letter.functions(), letter.statuses());
        let (attempts, error) = (letter.attempts(), letter.errors());
        let (partition_s, offset_s) = (partition.to_string(), offset.to_string());
        let mut wait = Duration::from_millis(200);
        loop {
            let mut hs = OwnedHeaders::new_with_capacity(original.headers.len() + 7);
            for (k, v) in &original.headers {
                hs = hs.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            for (k, v) in [
                (headers::FUNCTION, function.as_str()),
                (headers::STATUS, status.as_str()),
                (headers::ATTEMPTS, attempts.as_str()),
                (headers::ERROR, error.as_str()),
                (headers::TOPIC, topic),
                (headers::PARTITION, partition_s.as_str()),
                (headers::OFFSET, offset_s.as_str()),
            ] {
                hs = hs.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(&original.payload[..])
                .headers(hs);
            if let Some(k) = &original.key {
                record = record.key(&k[..]);
            }
            let sent = tokio::select! {
                r = self.producer.send(record, Duration::from_secs(30)) => r,
                _ = self.cancel.cancelled() => return false,
            };
            match sent {
                Ok(_) => {
                    self.metrics.dead_letter(&self.topic);
                    tracing::info!(dead_letter_topic = %self.topic, %topic, partition, offset, "message dead-lettered");
                    return true;
                }
                Err((e, _)) => {
                    tracing::warn!(dead_letter_topic = %self.topic, %topic, partition, offset, error = %Chain(&e), retry_in = ?wait, "cannot produce the dead letter; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return false,
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
}
