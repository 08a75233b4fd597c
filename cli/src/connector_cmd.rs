//! `tributary connector <kind>`: connectors built on the connector SDK.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};
use tributary_connector_sdk::config::parse_duration;
use tributary_connector_sdk::{ConfigError, ControllerConfig, shutdown_signal};
use tributary_cron::{CronConfig, CronSource, schedule};

/// The connectors.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Invoke functions on the schedules in their `schedule` annotations.
    Cron(CronArgs),
}

/// Settings every connector shares; env names follow the OpenFaaS connector-sdk.
#[derive(Debug, Clone, Args)]
pub struct ConnectorArgs {
    /// The gateway's URL.
    #[arg(long, env = "gateway_url", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,
    /// Timeout of one function call.
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// How often the topic map is rebuilt from the gateway.
    #[arg(long, env = "rebuild_interval", default_value = "10s", value_parser = parse_duration)]
    pub rebuild_interval: Duration,
    /// Separator of topics in the `topic` annotation.
    #[arg(long, env = "topic_delimiter", default_value = ",")]
    pub topic_delimiter: String,
    /// Call /async-function/NAME instead of /function/NAME.
    #[arg(long, env = "asynchronous_invocation", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub asynchronous_invocation: bool,
    /// Content-Type of requests to functions.
    #[arg(long, env = "content_type", default_value = "text/plain")]
    pub content_type: String,
    /// Log one line per function response.
    #[arg(long, env = "print_response", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub print_response: bool,
    /// Include response bodies in those lines.
    #[arg(long, env = "print_response_body", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub print_response_body: bool,
    /// Log request bodies.
    #[arg(long, env = "print_request_body", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub print_request_body: bool,
    /// Send basic auth to the gateway's /system routes.
    #[arg(long, env = "basic_auth", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub basic_auth: bool,
    /// Folder with basic-auth-user and basic-auth-password.
    #[arg(long, env = "secret_mount_path", default_value = "/var/secrets")]
    pub secret_mount_path: PathBuf,
    /// Messages in the connector at once.
    #[arg(long, env = "max_inflight", default_value_t = 64)]
    pub max_inflight: usize,
    /// Retries of a retryable failure before dead-lettering.
    #[arg(long, env = "max_retries", default_value_t = 5)]
    pub max_retries: u32,
    /// First retry wait (doubles each retry, with full jitter).
    #[arg(long, env = "initial_retry_wait", default_value = "100ms", value_parser = parse_duration)]
    pub initial_retry_wait: Duration,
    /// Longest single retry wait, Retry-After included.
    #[arg(long, env = "max_retry_wait", default_value = "30s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
    /// Port of the Prometheus /metrics endpoint (0: off).
    #[arg(long, env = "metrics_port", default_value_t = 8081)]
    pub metrics_port: u16,
}

impl ConnectorArgs {
    /// The validated SDK configuration.
    pub fn config(&self) -> Result<ControllerConfig, ConfigError> {
        ControllerConfig::builder()
            .gateway_url(self.gateway_url.clone())
            .upstream_timeout(self.upstream_timeout)
            .rebuild_interval(self.rebuild_interval)
            .topic_delimiter(self.topic_delimiter.clone())
            .asynchronous_invocation(self.asynchronous_invocation)
            .content_type(self.content_type.clone())
            .print_response(self.print_response)
            .print_response_body(self.print_response_body)
            .print_request_body(self.print_request_body)
            .basic_auth(self.basic_auth)
            .secret_mount_path(self.secret_mount_path.clone())
            .max_inflight(self.max_inflight)
            .max_retries(self.max_retries)
            .initial_retry_wait(self.initial_retry_wait)
            .max_retry_wait(self.max_retry_wait)
            .metrics_port(self.metrics_port)
            .build()
    }
}

/// Cron connector settings.
#[derive(Debug, Clone, Args)]
pub struct CronArgs {
    /// Shared connector settings.
    #[command(flatten)]
    pub common: ConnectorArgs,
    /// Fire even while the previous run of the same function is still in flight.
    #[arg(long, env = "allow_overlap", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_overlap: bool,
    /// Time zone of schedules without CRON_TZ= or a timezone annotation (IANA name).
    #[arg(long, env = "cron_timezone", default_value = "UTC")]
    pub timezone: String,
}

impl CronArgs {
    /// The cron source's settings.
    pub fn cron_config(&self) -> anyhow::Result<CronConfig> {
        Ok(CronConfig {
            allow_overlap: self.allow_overlap,
            default_timezone: schedule::parse_tz(&self.timezone)
                .map_err(|e| anyhow::anyhow!("invalid cron_timezone: {e}"))?,
            topic_delimiter: self.common.topic_delimiter.clone(),
        })
    }
}

/// Runs a connector until SIGINT/SIGTERM.
pub async fn run(command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Cron(args) => {
            let config = args.common.config()?;
            let source = CronSource::new(args.cron_config()?);
            tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
        }
    }
    Ok(())
}
