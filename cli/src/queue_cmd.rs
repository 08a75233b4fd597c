//! Queue settings shared by `gateway`, `up` and `queue-worker`, and `tributary queue-worker`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::builder::BoolishValueParser;
use tributary_connector_sdk::config::parse_duration;
use tributary_gateway::queue::{JetStreamQueue, Queue, SqliteQueue, Worker, WorkerConfig};

/// Where asynchronous requests are stored.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// NATS server for a JetStream queue (e.g. nats://127.0.0.1:4222); the embedded queue otherwise.
    #[arg(long, env = "nats_url")]
    pub nats_url: Option<String>,
    /// File of the embedded queue (SQLite, WAL).
    #[arg(long, env = "queue_path", default_value = "tributary-queue.db")]
    pub queue_path: PathBuf,
    /// How long a JetStream delivery stays leased without a progress signal.
    #[arg(long, env = "ack_wait", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
}

impl QueueArgs {
    /// Opens the configured queue.
    pub async fn open(&self, max_inflight: usize) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(match &self.nats_url {
            Some(url) => {
                let pending =
                    i64::try_from(max_inflight.saturating_mul(4).max(64)).unwrap_or(i64::MAX);
                Arc::new(JetStreamQueue::connect(url, self.ack_wait, pending).await?)
            }
            None => Arc::new(SqliteQueue::open(&self.queue_path)?),
        })
    }
}

/// Queue worker settings (OpenFaaS queue-worker names).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Asynchronous requests invoked at once.
    #[arg(
        long = "queue-max-inflight",
        env = "max_inflight",
        default_value_t = 50
    )]
    pub max_inflight: usize,
    /// Attempts before a request is dead-lettered.
    #[arg(long, env = "max_retry_attempts", default_value_t = 10)]
    pub max_retry_attempts: u32,
    /// First retry wait (doubles per attempt, full jitter).
    #[arg(long = "queue-initial-retry-wait", env = "initial_retry_wait", default_value = "10s", value_parser = parse_duration)]
    pub initial_retry_wait: Duration,
    /// Longest retry wait.
    #[arg(long = "queue-max-retry-wait", env = "max_retry_wait", default_value = "120s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
}

impl WorkerArgs {
    /// The worker configuration for a gateway at `gateway_url`.
    pub fn config(
        &self,
        gateway_url: String,
        upstream_timeout: Duration,
        basic_auth: bool,
        secret_mount_path: PathBuf,
    ) -> anyhow::Result<WorkerConfig> {
        anyhow::ensure!(self.max_inflight > 0, "max_inflight must be at least 1");
        anyhow::ensure!(
            self.max_retry_attempts > 0,
            "max_retry_attempts must be at least 1"
        );
        Ok(WorkerConfig {
            gateway_url,
            max_inflight: self.max_inflight,
            max_retry_attempts: self.max_retry_attempts,
            initial_retry_wait: self.initial_retry_wait.min(self.max_retry_wait),
            max_retry_wait: self.max_retry_wait,
            upstream_timeout,
            basic_auth,
            secret_mount_path,
            ..WorkerConfig::default()
        })
    }
}

/// `tributary queue-worker`: a standalone worker on a NATS JetStream queue.
#[derive(Debug, Clone, Args)]
pub struct QueueWorkerArgs {
    /// The gateway whose functions are invoked.
    #[arg(long, env = "gateway_url", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,
    /// The NATS server holding the queue.
    #[arg(long, env = "nats_url", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// How long a delivery stays leased without a progress signal.
    #[arg(long, env = "ack_wait", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Timeout of one function call.
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Send basic auth when reading function annotations.
    #[arg(long, env = "basic_auth", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub basic_auth: bool,
    /// Folder with basic-auth-user and basic-auth-password.
    #[arg(
        long,
        env = "secret_mount_path",
        default_value = "/var/openfaas/secrets"
    )]
    pub secret_mount_path: PathBuf,
    /// Port of the Prometheus /metrics endpoint (0: off).
    #[arg(long, env = "metrics_port", default_value_t = 8081)]
    pub metrics_port: u16,
    /// Worker settings.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Runs a standalone queue worker until SIGINT/SIGTERM.
pub async fn queue_worker(args: QueueWorkerArgs) -> anyhow::Result<()> {
    let queue: Arc<dyn Queue> = Arc::new(
        JetStreamQueue::connect(
            &args.nats_url,
            args.ack_wait,
            i64::try_from(args.worker.max_inflight * 4).unwrap_or(i64::MAX),
        )
        .await?,
    );
    let config = args.worker.config(
        args.gateway_url.trim_end_matches('/').to_owned(),
        args.upstream_timeout,
        args.basic_auth,
        args.secret_mount_path.clone(),
    )?;
    let registry = prometheus::Registry::new();
    let cancel = tributary_connector_sdk::shutdown_signal();
    if args.metrics_port != 0 {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.metrics_port))
            .await
            .with_context(|| {
                format!(
                    "cannot serve metrics on port {} (metrics_port)",
                    args.metrics_port
                )
            })?;
        tokio::spawn(tributary_connector_sdk::metrics::serve(
            registry.clone(),
            listener,
            cancel.clone(),
        ));
    }
    Worker::new(queue, config, &registry).run(cancel).await;
    Ok(())
}
