//! `tributary`: the one binary. Every component is a subcommand.

mod connector_cmd;
mod echo;
mod gateway_cmd;
mod logging;
mod queue_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tributary turns events into function calls on an OpenFaaS-compatible gateway.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, propagate_version = true)]
struct Cli {
    /// Log format: `human` or `json` (env `log_format`); levels come from `RUST_LOG`.
    #[arg(long, env = "log_format", default_value = "human", global = true)]
    log_format: logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with the local provider and deploy the functions of a stack file.
    Up(Box<gateway_cmd::UpArgs>),
    /// Run the gateway (OpenFaaS REST API) with the local provider.
    Gateway(Box<gateway_cmd::GatewayArgs>),
    /// Run a standalone queue worker on a NATS JetStream queue.
    QueueWorker(Box<queue_cmd::QueueWorkerArgs>),
    /// Run a connector: cron, NATS, Kafka or SQS.
    #[command(subcommand)]
    Connector(connector_cmd::ConnectorCommand),
    /// Run the built-in echo function: an HTTP server on $PORT that answers with the request body.
    Echo(echo::EchoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => gateway_cmd::up(*args).await,
            Command::Gateway(args) => gateway_cmd::gateway(*args).await,
            Command::QueueWorker(args) => queue_cmd::queue_worker(*args).await,
            Command::Connector(cmd) => connector_cmd::run(cmd).await,
            Command::Echo(args) => echo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
