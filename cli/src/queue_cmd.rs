//! `tributary queue-worker`: a standalone worker on a NATS JetStream queue.

use anyhow::Context;
use clap::Args;
use tributary_queue::{GatewayLink, QueueConfig, Worker, WorkerConfig};

/// `tributary queue-worker` settings.
#[derive(Debug, Clone, Args)]
pub struct QueueWorkerArgs {
    /// The queue (its `nats_url` is required: the embedded queue belongs to its gateway).
    #[command(flatten)]
    pub queue: QueueConfig,
    /// How requests are delivered.
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// The gateway whose functions are invoked.
    #[command(flatten)]
    pub link: GatewayLink,
}

/// Runs a standalone queue worker until SIGINT/SIGTERM.
pub async fn queue_worker(args: QueueWorkerArgs) -> anyhow::Result<()> {
    let cancel = tributary_core::shutdown_signal();
    let backend = args
        .queue
        .jetstream(args.worker.max_inflight)
        .await?
        .context(
            "queue-worker needs nats_url (e.g. nats://127.0.0.1:4222): the embedded queue is only served by its own gateway",
        )?;
    Worker::new(backend, &args.worker, &args.link)?
        .run(cancel)
        .await
        .context("queue worker failed")
}
