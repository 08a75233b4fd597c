//! The async queue's settings, declared once: where requests are stored ([`QueueConfig`]), how
//! the worker delivers them ([`WorkerConfig`]), and the gateway a standalone worker calls
//! ([`GatewayLink`]). Env names follow OpenFaaS' queue-worker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tributary_core::auth::AuthArgs;
use tributary_core::queue::QueueError;
use tributary_core::units::{parse_count, parse_duration, parse_port, parse_positive_duration};

use crate::backend::Backend;
use crate::jetstream::JetStreamQueue;
use crate::sqlite::SqliteQueue;

/// Where asynchronous requests are stored.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct QueueConfig {
    /// NATS server for a JetStream queue (e.g. nats://127.0.0.1:4222); the embedded queue
    /// otherwise.
    #[arg(long, env = "nats_url")]
    pub nats_url: Option<String>,
    /// File of the embedded queue (SQLite, WAL; default: queue.db in the state directory). One
    /// process owns it at a time.
    #[arg(long, env = "queue_path")]
    pub queue_path: Option<PathBuf>,
    /// How long a JetStream delivery stays leased without a progress signal.
    #[arg(long, env = "ack_wait", default_value = "30s", value_parser = parse_positive_duration)]
    pub ack_wait: Duration,
}

impl QueueConfig {
    /// Opens the configured queue: JetStream with `nats_url`, else the embedded one at
    /// `queue_path` or `default_path`. `max_inflight` bounds JetStream's unacknowledged
    /// deliveries.
    pub async fn open(
        &self,
        max_inflight: usize,
        default_path: &std::path::Path,
    ) -> Result<Arc<dyn Backend>, QueueError> {
        if let Some(queue) = self.jetstream(max_inflight).await? {
            return Ok(queue);
        }
        let path = self
            .queue_path
            .clone()
            .unwrap_or_else(|| default_path.to_owned());
        let at = path.clone();
        // Opening creates folders and files: off the async runtime.
        match tokio::task::spawn_blocking(move || SqliteQueue::open(&at)).await {
            Ok(queue) => Ok(Arc::new(queue?)),
            Err(e) => Err(QueueError::Backend {
                queue: format!("embedded queue ({})", path.display()),
                what: "opening it failed".into(),
                source: e.into(),
            }),
        }
    }
}

impl QueueConfig {
    /// The JetStream queue at `nats_url`, or `None` when it is not set.
    pub async fn jetstream(
        &self,
        max_inflight: usize,
    ) -> Result<Option<Arc<dyn Backend>>, QueueError> {
        let Some(url) = self.nats_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let pending = i64::try_from(max_inflight.saturating_mul(4).max(64)).unwrap_or(i64::MAX);
        Ok(Some(Arc::new(
            JetStreamQueue::connect(url, self.ack_wait, pending).await?,
        )))
    }
}

fn parse_attempts(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(0) | Err(_) => Err(format!("{value:?}: max_retry_attempts must be at least 1")),
        Ok(n) => Ok(n),
    }
}

/// How the queue worker delivers requests (OpenFaaS queue-worker names).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct WorkerConfig {
    /// Asynchronous requests invoked at once.
    #[arg(long = "queue-max-inflight", env = "max_inflight", default_value = "50", value_parser = parse_count)]
    pub max_inflight: usize,
    /// Attempts before a request is dead-lettered (per function: com.openfaas.retry.attempts).
    #[arg(long, env = "max_retry_attempts", default_value = "10", value_parser = parse_attempts)]
    pub max_retry_attempts: u32,
    /// First retry wait; doubles per attempt, with full jitter (per function:
    /// com.openfaas.retry.min_wait).
    #[arg(long = "queue-initial-retry-wait", env = "initial_retry_wait", default_value = "10s", value_parser = parse_duration)]
    pub initial_retry_wait: Duration,
    /// Longest retry wait (per function: com.openfaas.retry.max_wait).
    #[arg(long = "queue-max-retry-wait", env = "max_retry_wait", default_value = "120s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
}

/// The gateway a queue worker calls, and where it serves its metrics.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct GatewayLink {
    /// The gateway whose functions are invoked.
    #[arg(long, env = "gateway_url", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,
    /// Timeout of one function call.
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,
    /// Basic auth for reading function annotations from /system.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Port of the Prometheus /metrics endpoint (0: off; the gateway's own worker reports on
    /// the gateway's /metrics).
    #[arg(long, env = "metrics_port", default_value = "8081", value_parser = parse_port)]
    pub metrics_port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::settings::{defaults, from_lookup};

    #[test]
    fn defaults_follow_the_openfaas_queue_worker() {
        let w: WorkerConfig = defaults();
        assert_eq!((w.max_inflight, w.max_retry_attempts), (50, 10));
        assert_eq!(w.initial_retry_wait, Duration::from_secs(10));
        let q: QueueConfig = defaults();
        assert_eq!(q.nats_url, None);
        let err = from_lookup::<WorkerConfig>(|k| (k == "max_retry_attempts").then(|| "0".into()))
            .expect_err("zero attempts");
        assert!(err.to_string().contains("max_retry_attempts"), "{err}");
    }
}
