//! `tributary connector <kind>`: the SDK's shared settings plus each connector's own, as the
//! connector crates declare them.

use clap::{Args, Subcommand};
use tributary_connector_sdk::{Connector, ControllerConfig, shutdown_signal};
use tributary_cron::{CronConfig, CronSource};
use tributary_kafka::{KafkaConfig, KafkaSource};
use tributary_nats::NatsConfig;
use tributary_sqs::{SqsConfig, SqsSource};

/// The connectors.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Invoke functions on the schedules in their `schedule` annotations.
    Cron(Box<With<CronConfig>>),
    /// Invoke functions for messages on NATS subjects (core or JetStream).
    Nats(Box<With<NatsConfig>>),
    /// Invoke functions for records on Kafka topics (consumer group, at-least-once).
    Kafka(Box<With<KafkaConfig>>),
    /// Invoke functions for messages on SQS queues (long polling, at-least-once).
    Sqs(Box<With<SqsConfig>>),
}

impl ConnectorCommand {
    /// `cron`, `nats`, `kafka` or `sqs`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Cron(_) => "cron",
            Self::Nats(_) => "nats",
            Self::Kafka(_) => "kafka",
            Self::Sqs(_) => "sqs",
        }
    }
}

/// A connector's settings: the ones every connector shares, and its own.
#[derive(Debug, Clone, Args)]
pub struct With<T: Args> {
    /// Settings every connector shares (OpenFaaS connector-sdk names).
    #[command(flatten)]
    pub common: ControllerConfig,
    /// The connector's own settings.
    #[command(flatten)]
    pub own: T,
}

/// Runs a connector until SIGINT/SIGTERM.
pub async fn run(command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Cron(args) => {
            let config = args.common.validate()?;
            let cron = CronConfig {
                topic_delimiter: config.topic_delimiter.clone(),
                ..args.own
            };
            tributary_connector_sdk::run(config, CronSource::new(cron), shutdown_signal()).await?;
        }
        ConnectorCommand::Nats(args) => {
            let config = args.common.validate()?;
            let nats = NatsConfig {
                max_ack_pending: config.max_inflight,
                ..args.own
            };
            let (source, replies) = tributary_nats::connect(nats).await?;
            Connector::new(config)
                .with_subscriber(replies)
                .run(source, shutdown_signal())
                .await?;
        }
        ConnectorCommand::Kafka(args) => {
            let config = args.common.validate()?;
            let source = KafkaSource::new(args.own)?;
            tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
        }
        ConnectorCommand::Sqs(args) => {
            let config = args.common.validate()?;
            let source = SqsSource::connect(args.own).await?;
            tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
        }
    }
    Ok(())
}
