//! `tributary connector <kind>`: connectors built on the connector SDK.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};
use tributary_connector_sdk::config::{parse_duration, parse_size};
use tributary_connector_sdk::{ConfigError, Connector, ControllerConfig, shutdown_signal};
use tributary_cron::{CronConfig, CronSource, schedule};
use tributary_kafka::{KafkaConfig, KafkaSource, Security, parse_options};
use tributary_nats::{Credentials, Mode, NatsConfig, Tls, url_from_broker_host};
use tributary_sqs::{SqsConfig, SqsSource};

/// The connectors.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Invoke functions on the schedules in their `schedule` annotations.
    Cron(Box<CronArgs>),
    /// Invoke functions for messages on NATS subjects (core or JetStream).
    Nats(Box<NatsArgs>),
    /// Invoke functions for records on Kafka topics (consumer group, at-least-once).
    Kafka(Box<KafkaArgs>),
    /// Invoke functions for messages on SQS queues (long polling, at-least-once).
    Sqs(Box<SqsArgs>),
}

/// SQS connector settings; region and credentials come from the standard AWS chain.
#[derive(Debug, Clone, Args)]
pub struct SqsArgs {
    /// Shared connector settings.
    #[command(flatten)]
    pub common: ConnectorArgs,
    /// Queue URL(s), comma separated.
    #[arg(long, env = "queue_url", value_delimiter = ',')]
    pub queue_url: Vec<String>,
    /// Topic of each queue, comma separated in queue_url's order (default: the queue's name).
    #[arg(long, env = "topic", value_delimiter = ',')]
    pub topic: Vec<String>,
    /// Long-polling wait of one receive (at most 20s).
    #[arg(long, env = "wait_time", default_value = "20s", value_parser = parse_duration)]
    pub wait_time: Duration,
    /// Messages per receive (1-10).
    #[arg(long, env = "max_messages", default_value_t = 10)]
    pub max_messages: i32,
    /// Visibility timeout asked on receive and renewed while a message is in the connector.
    #[arg(long, env = "visibility_timeout", default_value = "30s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// Queue failed messages go to; without it the queue's own redrive policy applies.
    #[arg(long, env = "dead_letter_queue_url")]
    pub dead_letter_queue_url: Option<String>,
    /// AWS region (default: the standard chain, then us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Endpoint override for SQS-compatible servers (e.g. http://127.0.0.1:5000).
    #[arg(long, env = "endpoint_url")]
    pub endpoint_url: Option<String>,
}

impl SqsArgs {
    /// The SQS source's settings.
    pub fn sqs_config(&self) -> SqsConfig {
        SqsConfig {
            queue_urls: self
                .queue_url
                .iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            topics: self.topic.iter().map(|t| t.trim().to_owned()).collect(),
            wait_time: self.wait_time,
            max_messages: self.max_messages,
            visibility_timeout: self.visibility_timeout,
            dead_letter_queue_url: self
                .dead_letter_queue_url
                .clone()
                .filter(|u| !u.trim().is_empty()),
            region: self.aws_region.clone().filter(|r| !r.trim().is_empty()),
            endpoint_url: self.endpoint_url.clone().filter(|u| !u.trim().is_empty()),
            ..SqsConfig::default()
        }
    }
}

/// Kafka connector settings (OpenFaaS kafka-connector names where they exist).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Shared connector settings.
    #[command(flatten)]
    pub common: ConnectorArgs,
    /// Bootstrap brokers, comma separated `host:port`.
    #[arg(long, env = "broker_hosts", value_delimiter = ',')]
    pub broker_hosts: Vec<String>,
    /// One broker (OpenFaaS' older name), used when broker_hosts is not given.
    #[arg(long, env = "broker_host", default_value = "kafka:9092")]
    pub broker_host: String,
    /// Topics to consume, comma separated; empty: every topic a function's annotation names.
    #[arg(long, env = "topics", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Consumer group.
    #[arg(long, env = "group", default_value = "faas-group-1")]
    pub group: String,
    /// Where a group with no committed offset starts: `oldest` or `newest`.
    #[arg(long, env = "initial_offset", default_value = "oldest")]
    pub initial_offset: String,
    /// Largest fetch per partition (e.g. 1MB).
    #[arg(long, env = "max_bytes", default_value = "1MiB", value_parser = parse_size)]
    pub max_bytes: usize,
    /// What stays in order: `partition`, `key` (per key within a partition) or `none`.
    #[arg(long, env = "order", default_value = "partition")]
    pub order: String,
    /// Topic failed messages go to; without it a failing message holds its partition.
    #[arg(long, env = "dead_letter_topic")]
    pub dead_letter_topic: Option<String>,
    /// Time a revoked partition's in-flight messages get before it is released.
    #[arg(long, env = "rebalance_grace", default_value = "10s", value_parser = parse_duration)]
    pub rebalance_grace: Duration,
    /// Use TLS.
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
    pub sasl_mechanism: Option<String>,
    /// File holding the SASL username.
    #[arg(long, env = "sasl_username_file")]
    pub sasl_username_file: Option<PathBuf>,
    /// File holding the SASL password.
    #[arg(long, env = "sasl_password_file")]
    pub sasl_password_file: Option<PathBuf>,
    /// Extra librdkafka properties, `key=value` comma separated.
    #[arg(long, env = "kafka_options", default_value = "")]
    pub kafka_options: String,
}

impl KafkaArgs {
    /// The Kafka source's settings.
    pub fn kafka_config(&self) -> anyhow::Result<KafkaConfig> {
        let list = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        };
        let mut brokers = list(&self.broker_hosts);
        if brokers.is_empty() {
            brokers = list(std::slice::from_ref(&self.broker_host));
        }
        Ok(KafkaConfig {
            brokers,
            topics: list(&self.topics),
            group: self.group.clone(),
            initial_offset: self.initial_offset.parse()?,
            max_bytes: self.max_bytes,
            order: self.order.parse()?,
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .filter(|t| !t.trim().is_empty()),
            rebalance_grace: self.rebalance_grace,
            security: Security {
                tls: self.tls,
                ca_file: self.ca_file.clone(),
                cert_file: self.cert_file.clone(),
                key_file: self.key_file.clone(),
                sasl_mechanism: self
                    .sasl_mechanism
                    .as_deref()
                    .filter(|m| !m.trim().is_empty())
                    .map(str::parse)
                    .transpose()?,
                sasl_username_file: self.sasl_username_file.clone(),
                sasl_password_file: self.sasl_password_file.clone(),
            },
            options: parse_options(&self.kafka_options)?,
            ..KafkaConfig::default()
        })
    }
}

/// NATS connector settings.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// Shared connector settings.
    #[command(flatten)]
    pub common: ConnectorArgs,
    /// NATS server URL(s).
    #[arg(long, env = "nats_url")]
    pub nats_url: Option<String>,
    /// NATS host (OpenFaaS name), used when nats_url is not given.
    #[arg(long, env = "broker_host", default_value = "127.0.0.1")]
    pub broker_host: String,
    /// Subjects to subscribe to, comma separated (wildcards * and > allowed).
    #[arg(long, env = "topics", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// `core` (queue group, at-most-once) or `jetstream` (durable consumer, at-least-once).
    #[arg(long, env = "nats_mode", default_value = "core")]
    pub mode: String,
    /// Queue group of core subscriptions.
    #[arg(long, env = "queue_group", default_value = "tributary-nats-connector")]
    pub queue_group: String,
    /// JetStream stream (created with the topics as subjects when missing).
    #[arg(long, env = "stream", default_value = "tributary-events")]
    pub stream: String,
    /// JetStream durable consumer.
    #[arg(long, env = "consumer", default_value = "tributary-nats-connector")]
    pub consumer: String,
    /// Subject dead letters are published to (JetStream).
    #[arg(long, env = "dead_letter_subject")]
    pub dead_letter_subject: Option<String>,
    /// How long a JetStream delivery may go unacknowledged.
    #[arg(long, env = "ack_wait", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// User name (with nats_password).
    #[arg(long, env = "nats_user")]
    pub user: Option<String>,
    /// Password.
    #[arg(long, env = "nats_password")]
    pub password: Option<String>,
    /// Token.
    #[arg(long, env = "nats_token")]
    pub token: Option<String>,
    /// Credentials (.creds) file.
    #[arg(long, env = "nats_creds")]
    pub creds: Option<PathBuf>,
    /// CA certificate to trust.
    #[arg(long, env = "nats_tls_ca")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (with nats_tls_key).
    #[arg(long, env = "nats_tls_cert")]
    pub tls_cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, env = "nats_tls_key")]
    pub tls_key: Option<PathBuf>,
}

impl NatsArgs {
    fn nats_config(&self) -> anyhow::Result<NatsConfig> {
        let mode = match self.mode.to_ascii_lowercase().as_str() {
            "core" => Mode::Core,
            "jetstream" | "js" => Mode::JetStream,
            other => anyhow::bail!("invalid nats_mode {other:?}: use core or jetstream"),
        };
        let topics: Vec<String> = self
            .topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        anyhow::ensure!(
            !topics.is_empty(),
            "topics is empty: name the subjects to subscribe to, e.g. topics=orders,events.>"
        );
        let user = match (&self.user, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => anyhow::bail!("nats_user and nats_password go together"),
        };
        let client_cert = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => anyhow::bail!("nats_tls_cert and nats_tls_key go together"),
        };
        Ok(NatsConfig {
            url: self
                .nats_url
                .clone()
                .unwrap_or_else(|| url_from_broker_host(&self.broker_host)),
            subjects: topics,
            mode,
            queue_group: self.queue_group.clone(),
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            dead_letter_subject: self.dead_letter_subject.clone(),
            ack_wait: self.ack_wait,
            max_ack_pending: self.common.max_inflight,
            credentials: Credentials {
                user,
                token: self.token.clone(),
                creds_file: self.creds.clone(),
            },
            tls: Tls {
                required: self.tls_ca.is_some() || client_cert.is_some(),
                ca_file: self.tls_ca.clone(),
                client_cert,
            },
        })
    }
}

/// Settings every connector shares; env names follow the OpenFaaS connector-sdk.
#[derive(Debug, Clone, Args)]
pub struct ConnectorArgs {
    /// The gateway's URL.
    #[arg(long, env = "gateway_url", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,
    /// Timeout of one function call.
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// How often the topic map is rebuilt from the gateway.
    #[arg(long, env = "rebuild_interval", default_value = "10s", value_parser = parse_duration)]
    pub rebuild_interval: Duration,
    /// Separator of topics in the `topic` annotation.
    #[arg(long, env = "topic_delimiter", default_value = ",")]
    pub topic_delimiter: String,
    /// Call /async-function/NAME instead of /function/NAME.
    #[arg(long, env = "asynchronous_invocation", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub asynchronous_invocation: bool,
    /// Content-Type of requests to functions.
    #[arg(long, env = "content_type", default_value = "text/plain")]
    pub content_type: String,
    /// Log one line per function response.
    #[arg(long, env = "print_response", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub print_response: bool,
    /// Include response bodies in those lines.
    #[arg(long, env = "print_response_body", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub print_response_body: bool,
    /// Log request bodies.
    #[arg(long, env = "print_request_body", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub print_request_body: bool,
    /// Send basic auth to the gateway's /system routes.
    #[arg(long, env = "basic_auth", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub basic_auth: bool,
    /// Folder with basic-auth-user and basic-auth-password.
    #[arg(long, env = "secret_mount_path", default_value = "/var/secrets")]
    pub secret_mount_path: PathBuf,
    /// Messages in the connector at once.
    #[arg(long, env = "max_inflight", default_value_t = 64)]
    pub max_inflight: usize,
    /// Retries of a retryable failure before dead-lettering.
    #[arg(long, env = "max_retries", default_value_t = 5)]
    pub max_retries: u32,
    /// First retry wait (doubles each retry, with full jitter).
    #[arg(long, env = "initial_retry_wait", default_value = "100ms", value_parser = parse_duration)]
    pub initial_retry_wait: Duration,
    /// Longest single retry wait, Retry-After included.
    #[arg(long, env = "max_retry_wait", default_value = "30s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
    /// Port of the Prometheus /metrics endpoint (0: off).
    #[arg(long, env = "metrics_port", default_value_t = 8081)]
    pub metrics_port: u16,
}

impl ConnectorArgs {
    /// The validated SDK configuration.
    pub fn config(&self) -> Result<ControllerConfig, ConfigError> {
        ControllerConfig::builder()
            .gateway_url(self.gateway_url.clone())
            .upstream_timeout(self.upstream_timeout)
            .rebuild_interval(self.rebuild_interval)
            .topic_delimiter(self.topic_delimiter.clone())
            .asynchronous_invocation(self.asynchronous_invocation)
            .content_type(self.content_type.clone())
            .print_response(self.print_response)
            .print_response_body(self.print_response_body)
            .print_request_body(self.print_request_body)
            .basic_auth(self.basic_auth)
            .secret_mount_path(self.secret_mount_path.clone())
            .max_inflight(self.max_inflight)
            .max_retries(self.max_retries)
            .initial_retry_wait(self.initial_retry_wait)
            .max_retry_wait(self.max_retry_wait)
            .metrics_port(self.metrics_port)
            .build()
    }
}

/// Cron connector settings.
#[derive(Debug, Clone, Args)]
pub struct CronArgs {
    /// Shared connector settings.
    #[command(flatten)]
    pub common: ConnectorArgs,
    /// Fire even while the previous run of the same function is still in flight.
    #[arg(long, env = "allow_overlap", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_overlap: bool,
    /// Time zone of schedules without CRON_TZ= or a timezone annotation (IANA name).
    #[arg(long, env = "cron_timezone", default_value = "UTC")]
    pub timezone: String,
}

impl CronArgs {
    /// The cron source's settings.
    pub fn cron_config(&self) -> anyhow::Result<CronConfig> {
        Ok(CronConfig {
            allow_overlap: self.allow_overlap,
            default_timezone: schedule::parse_tz(&self.timezone)
                .map_err(|e| anyhow::anyhow!("invalid cron_timezone: {e}"))?,
            topic_delimiter: self.common.topic_delimiter.clone(),
        })
    }
}

/// Runs a connector until SIGINT/SIGTERM.
pub async fn run(command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Cron(args) => {
            let config = args.common.config()?;
            let source = CronSource::new(args.cron_config()?);
            tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
        }
        ConnectorCommand::Nats(args) => {
            let config = args.common.config()?;
            let (source, replies) = tributary_nats::connect(args.nats_config()?).await?;
            Connector::new(config)
                .with_subscriber(replies)
                .run(source, shutdown_signal())
                .await?;
        }
        ConnectorCommand::Kafka(args) => {
            let config = args.common.config()?;
            let source = KafkaSource::new(args.kafka_config()?)?;
            tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
        }
        ConnectorCommand::Sqs(args) => {
            let config = args.common.config()?;
            let source = SqsSource::connect(args.sqs_config()).await?;
            tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
        }
    }
    Ok(())
}
