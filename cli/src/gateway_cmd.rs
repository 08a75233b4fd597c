//! `tributary gateway` and `tributary up`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::builder::BoolishValueParser;
use tributary_gateway::queue::Worker;

use crate::queue_cmd::{QueueArgs, WorkerArgs};
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::ControllerConfig;
use tributary_cron::{CronConfig, CronSource};
use tributary_gateway::config::{parse_duration, parse_size};
use tributary_gateway::stack::Stack;
use tributary_gateway::{Gateway, GatewayConfig, LocalConfig, LocalProvider, Provider};

/// Gateway settings; env names follow OpenFaaS.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Port of the REST API.
    #[arg(long, env = "port", default_value_t = 8080)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "bind_address", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// How long a function may take to answer (Go duration or seconds).
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Largest request body (bytes, or with K/M/G); larger bodies get 413.
    #[arg(long, env = "max_body_size", default_value = "32M", value_parser = parse_size)]
    pub max_body_size: usize,
    /// Require basic auth on /system/* (credentials from secret_mount_path).
    #[arg(long, env = "basic_auth", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub basic_auth: bool,
    /// Folder with `basic-auth-user` and `basic-auth-password`.
    #[arg(
        long,
        env = "secret_mount_path",
        default_value = "/var/openfaas/secrets"
    )]
    pub secret_mount_path: PathBuf,
    /// How long a `mode=http` function may take to start listening.
    #[arg(long, env = "startup_timeout", default_value = "10s", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// Working directory of function processes (for `up`, the stack file's folder by default).
    #[arg(long, env = "work_dir")]
    pub work_dir: Option<PathBuf>,
    /// Where /async-function requests are stored.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Run a queue worker in this process (turn off when workers run as `tributary queue-worker`).
    #[arg(long, env = "queue_worker", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub queue_worker: bool,
    /// Queue worker settings.
    #[command(flatten)]
    pub worker: WorkerArgs,
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
    #[arg(long, env = "rebuild_interval", default_value = "5s", value_parser = parse_duration)]
    pub rebuild_interval: Duration,
    /// Port of the cron connector's /metrics (0: off).
    #[arg(long, env = "cron_metrics_port", default_value_t = 0)]
    pub cron_metrics_port: u16,
}

struct Running {
    worker: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    cancel: CancellationToken,
}

/// A gateway whose port is bound but which does not answer yet.
struct Bound {
    provider: Arc<LocalProvider>,
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
    worker: Option<Worker>,
}

async fn bind(args: &GatewayArgs, work_dir: PathBuf) -> anyhow::Result<Bound> {
    let cancel = CancellationToken::new();
    let config = GatewayConfig {
        bind: SocketAddr::new(args.bind, args.port),
        upstream_timeout: args.upstream_timeout,
        max_body_size: args.max_body_size,
        basic_auth: args.basic_auth,
        secret_mount_path: args.secret_mount_path.clone(),
    };
    let provider = Arc::new(LocalProvider::new(
        LocalConfig {
            work_dir,
            startup_timeout: args.startup_timeout,
            upstream_timeout: args.upstream_timeout,
            max_body_size: args.max_body_size,
            ..LocalConfig::default()
        },
        cancel.child_token(),
    ));
    let queue = args.queue.open(args.worker.max_inflight).await?;
    let gateway = Gateway::new(config.clone(), provider.clone() as Arc<dyn Provider>)?
        .with_queue(queue.clone());
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {} (port)", config.bind))?;
    let worker = if args.queue_worker {
        let local = listener.local_addr()?;
        let url = format!("http://{}", loopback(local.ip(), local.port()));
        let worker_config = args.worker.config(
            url,
            args.upstream_timeout,
            args.basic_auth,
            args.secret_mount_path.clone(),
        )?;
        Some(Worker::new(queue, worker_config, gateway.registry()))
    } else {
        None
    };
    spawn_signal_handler(cancel.clone());
    Ok(Bound {
        provider,
        gateway,
        listener,
        cancel,
        worker,
    })
}

impl Bound {
    fn serve(self) -> Running {
        let server = tokio::spawn(self.gateway.serve(self.listener, self.cancel.clone()));
        let worker = self
            .worker
            .map(|w| tokio::spawn(w.run(self.cancel.child_token())));
        Running {
            worker,
            server,
            cancel: self.cancel,
        }
    }
}

fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        cancel.cancel();
    });
}

/// `host:port` to reach a server bound to `ip` from this machine.
fn loopback(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => format!("127.0.0.1:{port}"),
        IpAddr::V6(v6) if v6.is_unspecified() => format!("[::1]:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        ip => format!("{ip}:{port}"),
    }
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
    let work_dir = args.work_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let running = bind(&args, work_dir).await?.serve();
    finish(running).await
}

/// Deploys a stack file's functions on the local provider and serves the gateway.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let stack = Stack::load(&args.file)?;
    let deployments = stack.deployments()?;
    let work_dir = args.gateway.work_dir.clone().unwrap_or_else(|| stack.dir());
    tracing::info!(file = %args.file.display(), functions = deployments.len(), work_dir = %work_dir.display(), "tributary up");
    // Deploy before answering: callers connecting meanwhile wait in the listen backlog instead
    // of finding a gateway without its functions (404s, or an empty topic map).
    let bound = bind(&args.gateway, work_dir).await?;
    let mut failed = 0;
    for d in deployments {
        let name = d.service.clone();
        match bound.provider.deploy(d).await {
            Ok(()) => tracing::info!(function = %name, "function deployed"),
            Err(e) => {
                failed += 1;
                tracing::error!(function = %name, error = %e, "function did not start");
            }
        }
    }
    let running = bound.serve();
    tracing::info!(
        url = %format!("http://127.0.0.1:{}", args.gateway.port),
        failed,
        "stack deployed; invoke functions at /function/NAME"
    );
    if !args.no_cron {
        let config = ControllerConfig::builder()
            .gateway_url(format!(
                "http://{}",
                loopback(args.gateway.bind, args.gateway.port)
            ))
            .upstream_timeout(args.gateway.upstream_timeout)
            .rebuild_interval(args.rebuild_interval)
            .basic_auth(args.gateway.basic_auth)
            .secret_mount_path(args.gateway.secret_mount_path.clone())
            .metrics_port(args.cron_metrics_port)
            .build()?;
        let cancel = running.cancel.clone();
        tokio::spawn(async move {
            let source = CronSource::new(CronConfig::default());
            if let Err(e) = tributary_connector_sdk::run(config, source, cancel).await {
                tracing::error!(error = %e, "cron connector stopped");
            }
        });
    }
    finish(running).await
}
