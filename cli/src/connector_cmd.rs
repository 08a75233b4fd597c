//! `tributary connector <kind>`: the SDK's shared settings plus each connector's own, as the
//! connector crates declare them.

use clap::{Args, Subcommand};
use tributary_connector_sdk::{Connector, ControllerConfig, shutdown_signal};
use tributary_cron::{CronConfig, CronSource};
use tributary_kafka::{KafkaConfig, KafkaSource};
use tributary_nats::NatsConfig;
use tributary_sqs::{SqsConfig, SqsSource};

/// What each connector does, as `--help` says it.
pub mod about {
    /// The cron connector.
    pub const CRON: &str = "Invoke functions on the schedules in their `schedule` annotations.";
    /// The NATS connector.
    pub const NATS: &str = "Invoke functions for messages on NATS subjects (core or JetStream).";
    /// The Kafka connector.
    pub const KAFKA: &str =
        "Invoke functions for records on Kafka topics (consumer group, at-least-once).";
    /// The SQS connector.
    pub const SQS: &str =
        "Invoke functions for messages on SQS queues (long polling, at-least-once).";
}

/// The connectors.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// The cron connector.
    #[command(about = about::CRON)]
    Cron(Box<With<CronConfig>>),
    /// The NATS connector.
    #[command(about = about::NATS)]
    Nats(Box<With<NatsConfig>>),
    /// The Kafka connector.
    #[command(about = about::KAFKA)]
    Kafka(Box<With<KafkaConfig>>),
    /// The SQS connector.
    #[command(about = about::SQS)]
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

    /// The threads its runtime should have.
    pub fn runtime(&self) -> RuntimeArgs {
        match self {
            Self::Cron(a) => a.runtime,
            Self::Nats(a) => a.runtime,
            Self::Kafka(a) => a.runtime,
            Self::Sqs(a) => a.runtime,
        }
    }
}

/// How many threads run a connector.
#[derive(Debug, Clone, Copy, Args)]
pub struct RuntimeArgs {
    /// Threads that run the connector's deliveries. With 1, everything runs on one thread:
    /// the least CPU per message (no hand-offs between threads), enough for tens of thousands
    /// of calls a second; more spread the work over that many threads, for a connector that
    /// needs more than one core.
    #[arg(long, env = "worker_threads", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,
}

impl RuntimeArgs {
    /// The runtime these settings ask for.
    pub fn builder(self) -> tokio::runtime::Builder {
        match self.worker_threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(usize::from(n));
                builder
            }
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
    /// Its runtime's threads.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Runs a connector until SIGINT/SIGTERM.
pub async fn run(command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Cron(args) => cron(*args).await,
        ConnectorCommand::Nats(args) => nats(*args).await,
        ConnectorCommand::Kafka(args) => kafka(*args).await,
        ConnectorCommand::Sqs(args) => sqs(*args).await,
    }
}

/// Runs the cron connector until SIGINT/SIGTERM.
pub async fn cron(args: With<CronConfig>) -> anyhow::Result<()> {
    let config = args.common.validate()?;
    let cron = CronConfig {
        topic_delimiter: config.topic_delimiter.clone(),
        ..args.own
    };
    tributary_connector_sdk::run(config, CronSource::new(cron), shutdown_signal()).await?;
    Ok(())
}

/// Runs the NATS connector until SIGINT/SIGTERM.
pub async fn nats(args: With<NatsConfig>) -> anyhow::Result<()> {
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
    Ok(())
}

/// Runs the Kafka connector until SIGINT/SIGTERM.
pub async fn kafka(args: With<KafkaConfig>) -> anyhow::Result<()> {
    let config = args.common.validate()?;
    let source = KafkaSource::new(args.own)?;
    tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
    Ok(())
}

/// Runs the SQS connector until SIGINT/SIGTERM.
pub async fn sqs(args: With<SqsConfig>) -> anyhow::Result<()> {
    let config = args.common.validate()?;
    let source = SqsSource::connect(args.own).await?;
    tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RuntimeArgs;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_thread_is_a_current_thread_runtime_and_more_are_that_many_workers() {
        let build = |worker_threads| {
            RuntimeArgs { worker_threads }
                .builder()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let one = build(1);
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let three = build(3);
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
    }
}
