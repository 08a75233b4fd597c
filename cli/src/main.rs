//! `tributary`: the one binary. Every component is a subcommand.

mod connector_cmd;
mod echo;
mod gateway_cmd;
mod logging;
mod memory;
mod queue_cmd;
mod security;
#[cfg(test)]
mod settings_doc;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tributary_core::Chain;

/// Tributary turns events into function calls on an OpenFaaS-compatible gateway.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, propagate_version = true)]
struct Cli {
    /// Log format: `human` or `json` (env `log_format`); levels come from `RUST_LOG`.
    #[arg(long, env = "log_format", default_value = "human", global = true)]
    log_format: logging::LogFormat,

    /// OTLP/HTTP endpoint for OpenTelemetry spans, e.g. http://otel-collector:4318 (off when
    /// unset). Traces continue from `traceparent` either way.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,

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
            Command::Connector(c) => format!("tributary-{}-connector", c.kind()),
            Command::Echo(_) => "tributary-echo".into(),
        }
    }
}

/// Parses the command line and the environment. Env vars set but empty (as Helm charts and
/// shells often leave them) count as unset; a bad value from an env var is named by its variable.
fn parse() -> Cli {
    let command = tributary_core::settings::ignore_empty_env(Cli::command());
    let parsed = command
        .clone()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => cli,
        Err(e) => match tributary_core::settings::env_error(&e, &command) {
            Some(message) => {
                print_error(&message);
                std::process::exit(2);
            }
            None => e.exit(),
        },
    }
}

fn main() -> ExitCode {
    let cli = parse();
    logging::init(cli.log_format);
    memory::start_scavenger();
    let mut builder = match &cli.command {
        // A connector runs on one thread unless told otherwise (worker_threads).
        Command::Connector(c) => c.runtime().builder(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(endpoint) = &cli.otlp_endpoint {
            let tracer = tributary_core::trace::Tracer::otlp(endpoint, &cli.command.service_name())
                .map_err(|e| {
                    anyhow::anyhow!("cannot set up the OTLP exporter for {endpoint}: {e}")
                })?;
            tributary_core::trace::set_global(tracer);
        }
        match cli.command {
            Command::Up(args) => gateway_cmd::up(*args).await,
            Command::Gateway(args) => gateway_cmd::gateway(*args).await,
            Command::QueueWorker(args) => queue_cmd::queue_worker(*args).await,
            Command::Connector(cmd) => connector_cmd::run(cmd).await,
            Command::Echo(args) => echo::run(args).await,
        }
    });
    // Spans that ended in the last export interval go out before the process does.
    runtime.block_on(tributary_core::trace::global().flush(std::time::Duration::from_secs(2)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&Chain(e.as_ref()).to_string());
            ExitCode::FAILURE
        }
    }
}

/// Prints a fatal error once, on stderr; a closed stderr is not a reason to panic.
fn print_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}
