//! The Kafka connector's settings; `librdkafka` builds the client configuration from them.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use tributary_core::units::{parse_duration, parse_size};

use crate::KafkaError;

mod librdkafka;

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialOffset {
    /// The earliest retained message (`oldest`).
    #[default]
    Oldest,
    /// Only messages produced after the group joins (`newest`).
    Newest,
}

impl std::str::FromStr for InitialOffset {
    type Err = KafkaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "oldest" | "earliest" => Ok(Self::Oldest),
            "newest" | "latest" => Ok(Self::Newest),
            other => Err(KafkaError::Config(format!(
                "initial_offset must be `oldest` or `newest`, not {other:?}"
            ))),
        }
    }
}

/// What must stay in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// One message at a time per partition, in offset order (the default).
    #[default]
    Partition,
    /// In order per message key within a partition; different keys run concurrently.
    Key,
    /// No order: every message may run concurrently (commits still never pass an unfinished one).
    None,
}

impl std::str::FromStr for Order {
    type Err = KafkaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "partition" => Ok(Self::Partition),
            "key" => Ok(Self::Key),
            "none" => Ok(Self::None),
            other => Err(KafkaError::Config(format!(
                "order must be `partition`, `key` or `none`, not {other:?}"
            ))),
        }
    }
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`.
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = KafkaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            other => Err(KafkaError::Config(format!(
                "sasl_mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, not {other:?}"
            ))),
        }
    }
}

/// TLS and SASL settings; credentials and keys are read from files.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Security {
    /// Use TLS (implied by any of the files below).
    #[arg(long, env = "tls", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls: bool,
    /// CA bundle (PEM) to verify the brokers.
    #[arg(long, env = "ca_file")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "cert_file")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "key_file")]
    pub key_file: Option<PathBuf>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "sasl_mechanism")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// File holding the SASL username.
    #[arg(long, env = "sasl_username_file")]
    pub sasl_username_file: Option<PathBuf>,
    /// File holding the SASL password.
    #[arg(long, env = "sasl_password_file")]
    pub sasl_password_file: Option<PathBuf>,
}

/// The Kafka connector's settings (OpenFaaS kafka-connector names where they exist).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated `host:port`.
    #[arg(long, env = "broker_hosts", value_delimiter = ',')]
    pub broker_hosts: Vec<String>,
    /// One broker (OpenFaaS' older name), used when broker_hosts is not given.
    #[arg(long, env = "broker_host", default_value = "kafka:9092")]
    pub broker_host: String,
    /// Topics to consume, comma separated; empty: every topic a function's annotation names,
    /// followed as functions are deployed and removed.
    #[arg(long, env = "topics", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Consumer group.
    #[arg(long, env = "group", default_value = "faas-group-1")]
    pub group: String,
    /// Where a group with no committed offset starts: `oldest` or `newest`.
    #[arg(long, env = "initial_offset", default_value = "oldest")]
    pub initial_offset: InitialOffset,
    /// Largest fetch, per partition and per response (e.g. 1MB; a larger batch still comes).
    #[arg(long, env = "max_bytes", default_value = "256KiB", value_parser = parse_size)]
    pub max_bytes: usize,
    /// What stays in order: `partition`, `key` (per key within a partition) or `none`.
    #[arg(long, env = "order", default_value = "partition")]
    pub order: Order,
    /// Topic failed messages go to; without one a failing message holds its partition,
    /// retrying with backoff, until it is delivered.
    #[arg(long, env = "dead_letter_topic")]
    pub dead_letter_topic: Option<String>,
    /// Time a revoked partition's in-flight messages get before it is released.
    #[arg(long, env = "rebalance_grace", default_value = "10s", value_parser = parse_duration)]
    pub rebalance_grace: Duration,
    /// How long finished offsets wait to be batched into one commit.
    #[arg(skip = Duration::from_millis(5))]
    pub commit_interval: Duration,
    /// TLS and SASL.
    #[command(flatten)]
    pub security: Security,
    /// Extra librdkafka properties, `key=value` comma separated, applied last.
    #[arg(long = "kafka-options", env = "kafka_options", value_delimiter = ',', value_parser = parse_option)]
    pub options: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

impl KafkaConfig {
    /// The bootstrap brokers: `broker_hosts`, else `broker_host`.
    pub fn brokers(&self) -> Vec<String> {
        let list = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        };
        let brokers = list(&self.broker_hosts);
        if brokers.is_empty() {
            list(std::slice::from_ref(&self.broker_host))
        } else {
            brokers
        }
    }

    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), KafkaError> {
        let brokers = self.brokers();
        if brokers.is_empty() {
            return Err(KafkaError::Config(
                "broker_hosts is empty: give at least one `host:port`".into(),
            ));
        }
        if let Some(b) = brokers.iter().find(|b| !b.contains(':')) {
            return Err(KafkaError::Config(format!(
                "broker_hosts entry {b:?} has no port: write it as `host:port`"
            )));
        }
        if self.group.trim().is_empty() {
            return Err(KafkaError::Config("group must not be empty".into()));
        }
        if self.max_bytes == 0 {
            return Err(KafkaError::Config("max_bytes must be above 0".into()));
        }
        if self
            .dead_letter_topic
            .as_deref()
            .is_some_and(|t| self.topics.iter().any(|x| x == t))
        {
            return Err(KafkaError::Config(
                "dead_letter_topic must not be one of the consumed topics".into(),
            ));
        }
        let s = &self.security;
        if s.sasl_mechanism.is_some()
            && (s.sasl_username_file.is_none() || s.sasl_password_file.is_none())
        {
            return Err(KafkaError::Config(
                "sasl_mechanism needs sasl_username_file and sasl_password_file".into(),
            ));
        }
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(KafkaError::Config(
                "cert_file and key_file go together (mutual TLS needs both)".into(),
            ));
        }
        Ok(())
    }
}

/// Parses one `key=value` entry of the `kafka_options` setting.
pub fn parse_option(kv: &str) -> Result<(String, String), KafkaError> {
    kv.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| KafkaError::Config(format!("kafka_options entry {kv:?} is not `key=value`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_options() {
        assert_eq!(
            "newest".parse::<InitialOffset>().unwrap(),
            InitialOffset::Newest
        );
        assert!("middle".parse::<InitialOffset>().is_err());
        assert_eq!(
            "scram-sha-512".parse::<SaslMechanism>().unwrap(),
            SaslMechanism::ScramSha512
        );
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
        assert_eq!("key".parse::<Order>().unwrap(), Order::Key);
        let c: KafkaConfig = tributary_core::settings::from_lookup(|k| {
            (k == "kafka_options").then(|| "session.timeout.ms=6000, fetch.wait.max.ms = 10".into())
        })
        .unwrap();
        assert_eq!(
            c.options,
            vec![
                ("session.timeout.ms".into(), "6000".into()),
                ("fetch.wait.max.ms".into(), "10".into())
            ]
        );
        assert!(parse_option("nonsense").is_err());
        let err = tributary_core::settings::from_lookup::<KafkaConfig>(|k| {
            (k == "initial_offset").then(|| "middle".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("initial_offset must be"), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let mut c = KafkaConfig {
            broker_hosts: vec!["localhost".into()],
            ..KafkaConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("broker_hosts")
        );
        c.broker_hosts = vec!["localhost:9092".into()];
        c.validate().unwrap();
        c.security.sasl_mechanism = Some(SaslMechanism::Plain);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("sasl_username_file")
        );
    }
}
