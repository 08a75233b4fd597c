//! The librdkafka client configuration built from the connector's settings: security, the
//! consumer's bounded prefetch and fetch sizes, the dead-letter producer.

use std::path::PathBuf;

use rdkafka::ClientConfig;

use super::{InitialOffset, KafkaConfig};
use crate::KafkaError;

/// Messages librdkafka keeps prefetched per partition (`queued.min.messages`; its default is
/// 100,000): at 10,000 messages/s on a partition, a fifth of a second of work.
const PREFETCH_MESSAGES: &str = "2000";
/// The most the prefetch queue holds, in KiB (`queued.max.messages.kbytes`; default 64 MiB).
const PREFETCH_KBYTES: &str = "4096";
/// How long librdkafka waits before fetching again once the prefetch queue was full
/// (`fetch.queue.backoff.ms`; its default, 1 s, starves a queue this small).
const PREFETCH_BACKOFF_MS: &str = "5";

/// The least `message.max.bytes` (the largest request) the consumer is given: its requests
/// (commits, group joins listing the topics) are far smaller; librdkafka's own default is
/// 1,000,000, and it refuses a `fetch.max.bytes` below it.
const MIN_REQUEST_MAX_BYTES: usize = 64 * 1024;

impl KafkaConfig {
    /// Client settings shared by the consumer and the dead-letter producer.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers().join(","))
            .set("client.id", "tributary-kafka-connector");
        let s = &self.security;
        let tls = s.tls || s.ca_file.is_some() || s.cert_file.is_some();
        let protocol = match (tls, s.sasl_mechanism.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        let path = |p: &PathBuf, what: &str| -> Result<String, KafkaError> {
            if !p.is_file() {
                return Err(KafkaError::Config(format!(
                    "{what} {} is not a readable file",
                    p.display()
                )));
            }
            Ok(p.display().to_string())
        };
        if let Some(p) = &s.ca_file {
            c.set("ssl.ca.location", path(p, "ca_file")?);
        }
        if let Some(p) = &s.cert_file {
            c.set("ssl.certificate.location", path(p, "cert_file")?);
        }
        if let Some(p) = &s.key_file {
            c.set("ssl.key.location", path(p, "key_file")?);
        }
        if let Some(m) = s.sasl_mechanism {
            let read = |p: &Option<PathBuf>, what: &'static str| -> Result<String, KafkaError> {
                let p = p
                    .as_ref()
                    .ok_or_else(|| KafkaError::Config(format!("sasl_mechanism needs {what}")))?;
                std::fs::read_to_string(p)
                    .map(|v| v.trim().to_owned())
                    .map_err(|source| KafkaError::Read {
                        what,
                        path: p.clone(),
                        source,
                    })
            };
            c.set("sasl.mechanism", m.as_str())
                .set(
                    "sasl.username",
                    read(&s.sasl_username_file, "sasl_username_file")?,
                )
                .set(
                    "sasl.password",
                    read(&s.sasl_password_file, "sasl_password_file")?,
                );
        }
        Ok(c)
    }

    /// The consumer's largest request (`message.max.bytes`): the one given in `kafka_options`,
    /// else `max_bytes` but at least [`MIN_REQUEST_MAX_BYTES`].
    fn request_max_bytes(&self) -> usize {
        self.options
            .iter()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(self.max_bytes.max(MIN_REQUEST_MAX_BYTES))
    }

    /// The consumer's settings: manual offset storage and commits, the group, and a bounded
    /// prefetch queue (`kafka_options` may change any of them).
    pub fn consumer_config(&self) -> Result<ClientConfig, KafkaError> {
        let mut c = self.client_config()?;
        let max_bytes = self.max_bytes.to_string();
        let request_max = self.request_max_bytes();
        // The most one fetch response may carry: `max_bytes`, but no less than the consumer's
        // `message.max.bytes` (librdkafka refuses less).
        let fetch_max = self.max_bytes.max(request_max);
        c.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match self.initial_offset {
                    InitialOffset::Oldest => "earliest",
                    InitialOffset::Newest => "latest",
                },
            )
            .set("max.partition.fetch.bytes", &max_bytes)
            // A whole fetch response (all partitions of a broker) is held in memory as it
            // arrives, and librdkafka parses every message of it at once into an operation of
            // ~400 bytes: a 1 MiB response of 50-byte messages is 20,000 of them, 8 MB. Its
            // default (its prefetch bound, 4 MiB here) put the connector at 48 MB resident
            // while it caught up on a 150,000-message backlog, 1 MiB at 22 MB, 256 KiB at
            // 16 MB, as fast. A batch larger than it still comes through (the limit is soft,
            // KIP-74).
            .set("message.max.bytes", request_max.to_string())
            .set("fetch.max.bytes", fetch_max.to_string())
            // The prefetch queue's bounds. librdkafka's defaults (100,000 messages per
            // partition, 64 MiB) held a whole 60,000-message backlog, +25 MB resident, for no
            // gain: a fetch is a millisecond away, and with a short backoff a small queue is
            // refilled before it runs dry (bench/kafka.sh: as fast or faster).
            .set("queued.min.messages", PREFETCH_MESSAGES)
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
            .set("fetch.queue.backoff.ms", PREFETCH_BACKOFF_MS);
        for (k, v) in &self.options {
            c.set(k, v);
        }
        Ok(c)
    }

    /// The dead-letter producer's settings: idempotent, every replica acknowledges.
    pub fn producer_config(&self) -> Result<ClientConfig, KafkaError> {
        let mut c = self.client_config()?;
        c.set("acks", "all").set("message.timeout.ms", "30000");
        for (k, v) in self.options.iter().filter(|(k, _)| !is_consumer_only(k)) {
            c.set(k, v);
        }
        Ok(c)
    }
}

/// librdkafka consumer properties a producer would warn about.
fn is_consumer_only(key: &str) -> bool {
    key.starts_with("session.")
        || key.starts_with("heartbeat.")
        || key.starts_with("group.")
        || key.starts_with("fetch.")
        || key.starts_with("max.poll.")
        || key.starts_with("auto.")
        || key.starts_with("partition.assignment")
        || key.starts_with("enable.auto")
        || key.starts_with("coordinator.")
}

#[cfg(test)]
mod tests {
    use super::super::{SaslMechanism, Security};
    use super::*;

    #[test]
    fn the_prefetch_queue_is_bounded_and_kafka_options_win() {
        let c: KafkaConfig = tributary_core::settings::from_lookup(|k| match k {
            "broker_hosts" => Some("localhost:9092".into()),
            _ => None,
        })
        .unwrap();
        let cc = c.consumer_config().unwrap();
        assert_eq!(cc.get("queued.min.messages"), Some("2000"));
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("5"));
        let c: KafkaConfig = tributary_core::settings::from_lookup(|k| match k {
            "broker_hosts" => Some("localhost:9092".into()),
            "kafka_options" => Some("queued.max.messages.kbytes=65536".into()),
            _ => None,
        })
        .unwrap();
        let cc = c.consumer_config().unwrap();
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("65536"));
    }

    #[test]
    fn a_fetch_is_bounded_by_max_bytes_but_never_below_what_librdkafka_accepts() {
        let fetch_max = |max_bytes: &str, options: Option<&str>| {
            let c: KafkaConfig = tributary_core::settings::from_lookup(|k| match k {
                "broker_hosts" => Some("localhost:9092".into()),
                "max_bytes" => Some(max_bytes.into()),
                "kafka_options" => options.map(Into::into),
                _ => None,
            })
            .unwrap();
            let cc = c.consumer_config().unwrap();
            // librdkafka checks its settings when a client is made (no broker needed).
            if let Err(e) = cc.create::<rdkafka::consumer::BaseConsumer>() {
                panic!("librdkafka refuses max_bytes={max_bytes} {options:?}: {e}");
            }
            cc.get("fetch.max.bytes").map(str::to_owned)
        };
        assert_eq!(fetch_max("256KiB", None).as_deref(), Some("262144"));
        assert_eq!(fetch_max("1MiB", None).as_deref(), Some("1048576"));
        assert_eq!(fetch_max("4MiB", None).as_deref(), Some("4194304"));
        // Never below the consumer's message.max.bytes: 64 KiB at least, or the one given.
        assert_eq!(fetch_max("4KiB", None).as_deref(), Some("65536"));
        let given = Some("message.max.bytes=3000000");
        assert_eq!(fetch_max("1MiB", given).as_deref(), Some("3000000"));
    }

    #[test]
    fn security_sets_the_protocol_and_reads_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let (u, p) = (dir.path().join("user"), dir.path().join("pass"));
        std::fs::write(&u, "alice\n").unwrap();
        std::fs::write(&p, "s3cret\n").unwrap();
        let c = KafkaConfig {
            broker_hosts: vec!["b:9093".into()],
            security: Security {
                tls: true,
                sasl_mechanism: Some(SaslMechanism::ScramSha256),
                sasl_username_file: Some(u),
                sasl_password_file: Some(p),
                ..Security::default()
            },
            ..KafkaConfig::default()
        };
        let cc = c.client_config().unwrap();
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(cc.get("sasl.username"), Some("alice"));
        assert_eq!(cc.get("sasl.password"), Some("s3cret"));
        let missing = KafkaConfig {
            security: Security {
                ca_file: Some(dir.path().join("nope.pem")),
                ..Security::default()
            },
            ..c
        };
        assert!(
            missing
                .client_config()
                .unwrap_err()
                .to_string()
                .contains("ca_file")
        );
    }
}
