//! `tributary gateway` and `tributary up`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::builder::BoolishValueParser;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::ControllerConfig;
use tributary_core::Chain;
use tributary_core::auth::AuthArgs;
use tributary_core::queue::AsyncQueue;
use tributary_core::units::{parse_port, parse_positive_duration};
use tributary_cron::{CronConfig, CronSource};
use tributary_gateway::stack::Stack;
use tributary_gateway::{
    Gateway, GatewayConfig, KubernetesConfig, KubernetesProvider, LocalConfig, LocalProvider,
    Provider, StateDir, gateway_credentials,
};

use crate::security;
use tributary_queue::{GatewayLink, QueueConfig, Worker, WorkerConfig};

/// Where functions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Local processes (the embedded default).
    Local,
    /// Deployments and Services in a Kubernetes cluster.
    Kubernetes,
}

/// Everything `tributary gateway` runs: the gateway, its provider, its async queue and
/// (unless turned off) a queue worker.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The gateway.
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// Where functions run: local (processes on this machine) or kubernetes.
    #[arg(long, env = "provider", value_enum, default_value = "local")]
    pub provider: ProviderKind,
    /// The local provider.
    #[command(flatten)]
    pub local: LocalConfig,
    /// The kubernetes provider.
    #[command(flatten)]
    pub kubernetes: KubernetesConfig,
    /// Where /async-function requests are stored.
    #[command(flatten)]
    pub queue: QueueConfig,
    /// Run a queue worker in this process (turn off when workers run as `tributary queue-worker`).
    #[arg(long, env = "queue_worker", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub queue_worker: bool,
    /// The queue worker.
    #[command(flatten)]
    pub worker: WorkerConfig,
}

/// `tributary up` settings.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The OpenFaaS stack file to deploy.
    #[arg(
        short = 'f',
        long = "file",
        env = "stack_file",
        default_value = "stack.yml"
    )]
    pub file: PathBuf,
    /// Gateway settings.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Do not run the cron connector.
    #[arg(long)]
    pub no_cron: bool,
    /// How often the cron connector re-reads functions and schedules.
    #[arg(long, env = "rebuild_interval", default_value = "5s", value_parser = parse_positive_duration)]
    pub rebuild_interval: Duration,
    /// Port of the cron connector's /metrics (0: off).
    #[arg(long, env = "cron_metrics_port", default_value = "0", value_parser = parse_port)]
    pub cron_metrics_port: u16,
}

struct Running {
    worker: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    cancel: CancellationToken,
}

/// A gateway whose port is bound but which does not answer yet.
struct Bound {
    provider: Arc<dyn Provider>,
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
    worker: Option<Worker>,
    /// How in-process clients (the queue worker, `up`'s cron connector) authenticate.
    client_auth: AuthArgs,
}

async fn bind(args: &GatewayArgs, work_dir: PathBuf) -> anyhow::Result<Bound> {
    let cancel = tributary_core::shutdown_signal();
    let config = &args.gateway;
    let state_dir = config.state_dir.clone();
    let state = tokio::task::spawn_blocking(move || StateDir::open(state_dir.as_deref()))
        .await
        .context("opening the state directory failed")??;
    let credentials = gateway_credentials(&config.auth, &state).await?;
    let provider: Arc<dyn Provider> = match args.provider {
        ProviderKind::Local => {
            let local = LocalConfig {
                work_dir: Some(work_dir),
                ..args.local.clone()
            };
            Arc::new(LocalProvider::new(
                local,
                config,
                state.clone(),
                cancel.child_token(),
            ))
        }
        ProviderKind::Kubernetes => Arc::new(
            KubernetesProvider::connect(args.kubernetes.clone(), config, cancel.child_token())
                .await?,
        ),
    };
    let queue = args
        .queue
        .open(args.worker.max_inflight, &state.queue())
        .await?;
    let store: Arc<dyn AsyncQueue> = queue.clone();
    let listener = tokio::net::TcpListener::bind(config.listen_addr())
        .await
        .with_context(|| format!("cannot listen on {} (port)", config.listen_addr()))?;
    let port = listener.local_addr()?.port();
    let client_auth =
        security::announce(config, &state, credentials.as_ref().map(|(_, s)| s), port);
    let gateway = Gateway::new(
        config.clone(),
        provider.clone(),
        credentials.map(|(c, _)| c),
    )
    .with_queue(store);
    let worker = if args.queue_worker {
        let link = GatewayLink {
            gateway_url: format!("http://{}", config.local_authority(port)),
            upstream_timeout: config.upstream_timeout,
            auth: client_auth.clone(),
            metrics_port: 0,
        };
        // It reads the topic map over HTTP, but calls functions in-process: no third hop.
        Some(
            Worker::new(queue, &args.worker, &link)?
                .with_registry(gateway.registry())?
                .with_loopback(gateway.loopback()),
        )
    } else {
        None
    };
    Ok(Bound {
        provider,
        gateway,
        listener,
        cancel,
        worker,
        client_auth,
    })
}

impl Bound {
    /// Starts the queue worker (failing if its thread cannot be had), then serves.
    fn serve(self) -> anyhow::Result<Running> {
        let worker = self
            .worker
            .map(|w| run_worker(w, self.cancel.child_token()))
            .transpose()?;
        let server = tokio::spawn(self.gateway.serve(self.listener, self.cancel.clone()));
        Ok(Running {
            worker,
            server,
            cancel: self.cancel,
        })
    }
}

/// Runs the queue worker on a thread of its own with a single-threaded runtime (as a
/// connector runs: no hand-offs between threads per message); the handle ends when it does.
fn run_worker(
    worker: Worker,
    cancel: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    // The runtime is made (and dropped) on the worker's thread: a runtime may not be dropped
    // inside another's async context.
    std::thread::Builder::new()
        .name("queue-worker".into())
        .spawn(move || {
            let ran = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(worker.run(cancel)).map_err(Into::into));
            if let Err(e) = ran {
                tracing::error!(error = %Chain(e.as_ref()), "queue worker stopped");
            }
            let _ = done_tx.send(());
        })
        .context("cannot start the queue worker's thread")?;
    Ok(tokio::spawn(async move {
        let _ = done.await;
    }))
}

async fn finish(running: Running) -> anyhow::Result<()> {
    if let Some(worker) = running.worker {
        let _ = worker.await;
    }
    let result = running.server.await.context("gateway task failed")?;
    running.cancel.cancel();
    result.context("gateway server failed")
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let work_dir = args
        .local
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let running = bind(&args, work_dir).await?.serve()?;
    finish(running).await
}

/// Deploys a stack file's functions on the local provider and serves the gateway.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let stack = Stack::load(&args.file)?;
    let mut deployments = stack.deployments()?;
    // The same checks as the API's: a stack file cannot ask for what a caller may not.
    for d in &mut deployments {
        tributary_gateway::limits::validate_deployment(
            d,
            args.gateway.gateway.max_replicas,
            &args.gateway.gateway.function_namespace,
        )
        .with_context(|| format!("{}: function {:?}", args.file.display(), d.service))?;
    }
    let work_dir = args
        .gateway
        .local
        .work_dir
        .clone()
        .unwrap_or_else(|| stack.dir());
    tracing::info!(file = %args.file.display(), functions = deployments.len(), work_dir = %work_dir.display(), "tributary up");
    // Deploy before answering: callers connecting meanwhile wait in the listen backlog instead
    // of finding a gateway without its functions (404s, or an empty topic map).
    let bound = bind(&args.gateway, work_dir).await?;
    let port = bound.listener.local_addr()?.port();
    let client_auth = bound.client_auth.clone();
    let mut failed = 0;
    for d in deployments {
        let name = d.service.clone();
        match bound.provider.deploy(d).await {
            Ok(()) => tracing::info!(function = %name, "function deployed"),
            Err(e) => {
                failed += 1;
                tracing::error!(function = %name, error = %Chain(&e), "function did not start");
            }
        }
    }
    let running = bound.serve()?;
    tracing::info!(
        url = %format!("http://127.0.0.1:{port}"),
        failed,
        "stack deployed; invoke functions at /function/NAME"
    );
    if !args.no_cron {
        let gateway = &args.gateway.gateway;
        let config = ControllerConfig::builder()
            .gateway_url(format!("http://{}", gateway.local_authority(port)))
            .upstream_timeout(gateway.upstream_timeout)
            .rebuild_interval(args.rebuild_interval)
            .auth(client_auth)
            .metrics_port(args.cron_metrics_port)
            .build()?;
        let cancel = running.cancel.clone();
        tokio::spawn(async move {
            let source = CronSource::new(CronConfig::default());
            if let Err(e) = tributary_connector_sdk::run(config, source, cancel).await {
                tracing::error!(error = %Chain(&e), "cron connector stopped");
            }
        });
    }
    finish(running).await
}
