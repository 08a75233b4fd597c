//! `tributary`: every component as a subcommand (each connector is also a program of its own,
//! `tributary-<kind>-connector`, from this crate's library).

mod echo;
mod gateway_cmd;
mod queue_cmd;
mod security;
#[cfg(test)]
mod settings_doc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_cli::{connector_cmd, program};

/// Tributary turns events into function calls on an OpenFaaS-compatible gateway.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, propagate_version = true)]
struct Cli {
    /// Logs and span export.
    #[command(flatten)]
    globals: program::Globals,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway on its provider (local by default) and deploy the functions of a stack file.
    Up(Box<gateway_cmd::UpArgs>),
    /// Run the gateway (OpenFaaS REST API) on the local or kubernetes provider.
    Gateway(Box<gateway_cmd::GatewayArgs>),
    /// Run a standalone queue worker on a NATS JetStream queue.
    QueueWorker(Box<queue_cmd::QueueWorkerArgs>),
    /// Run a connector: cron, NATS, Kafka or SQS.
    #[command(subcommand)]
    Connector(connector_cmd::ConnectorCommand),
    /// Run the built-in echo function: an HTTP server on $PORT that answers with the request body.
    Echo(echo::EchoArgs),
}

impl Command {
    /// The OpenTelemetry `service.name` of this process.
    fn service_name(&self) -> String {
        match self {
            Command::Up(_) | Command::Gateway(_) => "tributary-gateway".into(),
            Command::QueueWorker(_) => "tributary-queue-worker".into(),
            Command::Connector(c) => program::connector_name(c.kind()),
            Command::Echo(_) => "tributary-echo".into(),
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = program::parse();
    let service = cli.command.service_name();
    let builder = match &cli.command {
        // A connector runs on one thread unless told otherwise (worker_threads).
        Command::Connector(c) => c.runtime().builder(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    program::run(cli.globals, &service, builder, async move {
        match cli.command {
            Command::Up(args) => gateway_cmd::up(*args).await,
            Command::Gateway(args) => gateway_cmd::gateway(*args).await,
            Command::QueueWorker(args) => queue_cmd::queue_worker(*args).await,
            Command::Connector(cmd) => connector_cmd::run(cmd).await,
            Command::Echo(args) => echo::run(args).await,
        }
    })
}
