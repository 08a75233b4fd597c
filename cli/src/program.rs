//! What every Tributary program does around its work: parse its command line and environment,
//! set up logs, the memory scavenger and OpenTelemetry, run on a Tokio runtime, and turn the
//! outcome into an exit code.

use std::future::Future;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use tributary_core::Chain;

use crate::connector_cmd::With;
use crate::{logging, memory};

/// Settings every program takes, before or after its subcommand.
#[derive(Debug, Clone, Args)]
pub struct Globals {
    /// Log format: `human` or `json` (env `log_format`); levels come from `RUST_LOG`.
    #[arg(long, env = "log_format", default_value = "human", global = true)]
    pub log_format: logging::LogFormat,

    /// OTLP/HTTP endpoint for OpenTelemetry spans, e.g. http://otel-collector:4318 (off when
    /// unset). Traces continue from `traceparent` either way.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// Parses `P` from the command line and the environment (see [`parse_with`]).
pub fn parse<P: Parser>() -> P {
    parse_with(P::command())
}

/// Parses `P` from the command line and the environment as `command` declares them. Env vars
/// set but empty (as Helm charts and shells often leave them) count as unset; a bad value from
/// an env var is named by its variable. Exits with status 2 on bad input.
pub fn parse_with<P: FromArgMatches>(command: clap::Command) -> P {
    let command = tributary_core::settings::ignore_empty_env(command);
    let parsed = command
        .clone()
        .try_get_matches()
        .and_then(|m| P::from_arg_matches(&m));
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => match tributary_core::settings::env_error(&e, &command) {
            Some(message) => {
                print_error(&message);
                std::process::exit(2);
            }
            None => e.exit(),
        },
    }
}

/// Runs `work` on the runtime `builder` makes, with logs, the memory scavenger and (when
/// `globals` names an endpoint) span export as `service`; success or the error's chain on
/// stderr and a failure status.
pub fn run<F>(
    globals: Globals,
    service: &str,
    mut builder: tokio::runtime::Builder,
    work: F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    logging::init(globals.log_format);
    memory::start_scavenger();
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(endpoint) = &globals.otlp_endpoint {
            let tracer = tributary_core::trace::Tracer::otlp(endpoint, service).map_err(|e| {
                anyhow::anyhow!("cannot set up the OTLP exporter for {endpoint}: {e}")
            })?;
            tributary_core::trace::set_global(tracer);
        }
        work.await
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

/// A connector's own program (`tributary-kafka-connector`, ...): the same settings as
/// `tributary connector <kind>`, without the subcommands.
#[derive(Debug, Parser)]
pub struct ConnectorProgram<T: Args> {
    /// Logs and span export.
    #[command(flatten)]
    pub globals: Globals,
    /// The connector's settings.
    #[command(flatten)]
    pub connector: With<T>,
}

/// The `main` of a connector's own program: parses `T`'s settings (the binary's name and
/// `about` as `--help` shows them) and runs `connector` with them until SIGINT/SIGTERM.
pub fn connector_main<T, F>(
    kind: &'static str,
    about: &'static str,
    connector: impl FnOnce(With<T>) -> F,
) -> ExitCode
where
    T: Args + FromArgMatches,
    F: Future<Output = anyhow::Result<()>>,
{
    let name = connector_name(kind);
    let program: ConnectorProgram<T> = parse_with(
        ConnectorProgram::<T>::command()
            .name(name.clone())
            .bin_name(name.clone())
            .about(about)
            .version(env!("CARGO_PKG_VERSION")),
    );
    let runtime = program.connector.runtime.builder();
    run(
        program.globals,
        &name,
        runtime,
        connector(program.connector),
    )
}

/// Connector `kind`'s own program's file name, also its OpenTelemetry `service.name`.
pub fn connector_name(kind: &str) -> String {
    format!("tributary-{kind}-connector")
}

/// Prints a fatal error once, on stderr; a closed stderr is not a reason to panic.
fn print_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}
