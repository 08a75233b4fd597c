//! Connector configuration: declared once as clap arguments with OpenFaaS connector-sdk env
//! names, read from the environment ([`ControllerConfig::from_env`]), from a command line (the
//! `tributary connector` subcommands flatten it), or built in code.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use tributary_core::auth::AuthArgs;
use tributary_core::client::Auth;
use tributary_core::retry::RetrySettings;
use tributary_core::settings::{self, SettingsError};
use tributary_core::units::{
    parse_count, parse_duration, parse_port, parse_positive_duration, parse_whole,
};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting from the environment does not parse.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A value (set in code, or in combination with another) is unusable.
    #[error("invalid {name}={value:?}: {reason}")]
    Invalid {
        /// The setting's env name.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it is wrong and what would be right.
        reason: String,
    },
}

fn parse_gateway_url(value: &str) -> Result<String, String> {
    tributary_core::client::check_url(value).map_err(|e| e.to_string())
}

fn parse_delimiter(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("topic_delimiter must not be empty".into());
    }
    Ok(value.to_owned())
}

/// Settings every connector shares; field names are the env var names (OpenFaaS connector-sdk).
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(mut_arg("secret_mount_path", |a| a.default_value("/var/secrets")))]
pub struct ControllerConfig {
    /// The gateway's URL.
    #[arg(long, env = "gateway_url", default_value = "http://127.0.0.1:8080", value_parser = parse_gateway_url)]
    pub gateway_url: String,
    /// Timeout of one function call (Go duration or seconds).
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,
    /// How often the topic map is rebuilt from the gateway.
    #[arg(long, env = "rebuild_interval", default_value = "10s", value_parser = parse_positive_duration)]
    pub rebuild_interval: Duration,
    /// Separator of topics in the `topic` annotation.
    #[arg(long, env = "topic_delimiter", default_value = ",", value_parser = parse_delimiter)]
    pub topic_delimiter: String,
    /// Call /async-function/NAME instead of /function/NAME.
    #[arg(long, env = "asynchronous_invocation", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub asynchronous_invocation: bool,
    /// Content-Type of requests to functions, unless the message has one.
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
    /// CloudEvents for every function: `binary` (ce-* headers) or `off` (per function:
    /// com.tributary.cloudevents=binary).
    #[arg(long, env = "cloudevents", default_value = "off", value_parser = parse_cloudevents, action = clap::ArgAction::Set)]
    pub cloudevents: bool,
    /// Basic auth on the gateway's /system routes (OpenFaaS connectors read the credentials
    /// from /var/secrets by default).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Messages in the connector at once, queued or in flight.
    #[arg(long, env = "max_inflight", default_value = "64", value_parser = parse_count)]
    pub max_inflight: usize,
    /// Retries of a retryable failure before dead-lettering (per function:
    /// com.openfaas.retry.attempts).
    #[arg(long, env = "max_retries", default_value = "5", value_parser = parse_whole)]
    pub max_retries: u32,
    /// First retry wait; doubles each retry, with full jitter (per function:
    /// com.openfaas.retry.min_wait).
    #[arg(long, env = "initial_retry_wait", default_value = "100ms", value_parser = parse_duration)]
    pub initial_retry_wait: Duration,
    /// Longest single retry wait, Retry-After included (per function:
    /// com.openfaas.retry.max_wait).
    #[arg(long, env = "max_retry_wait", default_value = "30s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,
    /// Port of the Prometheus /metrics endpoint (0: off).
    #[arg(long, env = "metrics_port", default_value = "8081", value_parser = parse_port)]
    pub metrics_port: u16,
}

/// `binary` or `off` (also empty).
fn parse_cloudevents(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "binary" => Ok(true),
        "off" | "" => Ok(false),
        other => Err(format!(
            "{other:?} is not a CloudEvents mode: use binary (ce-* headers) or off"
        )),
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        settings::defaults()
    }
}

impl ControllerConfig {
    /// Starts a builder from the defaults.
    pub fn builder() -> ControllerConfigBuilder {
        ControllerConfigBuilder {
            config: Self::default(),
        }
    }

    /// Reads the configuration from environment variables (OpenFaaS names), then validates it.
    pub fn from_env() -> Result<Self, ConfigError> {
        settings::from_env::<Self>()?.validate()
    }

    /// Reads the configuration through `lookup` (an env var reader), then validates it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        settings::from_lookup::<Self>(lookup)?.validate()
    }

    /// Checks the values make sense together; returns the config for chaining.
    pub fn validate(self) -> Result<Self, ConfigError> {
        let invalid = |name, value: String, reason: String| ConfigError::Invalid {
            name,
            value,
            reason,
        };
        let gateway_url = parse_gateway_url(&self.gateway_url)
            .map_err(|reason| invalid("gateway_url", self.gateway_url.clone(), reason))?;
        for (name, d) in [
            ("upstream_timeout", self.upstream_timeout),
            ("rebuild_interval", self.rebuild_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    name,
                    "0s".into(),
                    "must be longer than zero".into(),
                ));
            }
        }
        if self.topic_delimiter.is_empty() {
            return Err(invalid(
                "topic_delimiter",
                String::new(),
                "must not be empty".into(),
            ));
        }
        if http::HeaderValue::from_str(&self.content_type).is_err() {
            return Err(invalid(
                "content_type",
                self.content_type.clone(),
                "it is sent as a header on every call: use visible ASCII, e.g. application/json"
                    .into(),
            ));
        }
        if self.max_inflight == 0 {
            return Err(invalid(
                "max_inflight",
                "0".into(),
                "must be at least 1".into(),
            ));
        }
        if self.initial_retry_wait > self.max_retry_wait {
            return Err(invalid(
                "initial_retry_wait",
                humantime::format_duration(self.initial_retry_wait).to_string(),
                format!(
                    "must not exceed max_retry_wait ({})",
                    humantime::format_duration(self.max_retry_wait)
                ),
            ));
        }
        Ok(Self {
            gateway_url,
            ..self
        })
    }

    /// How the gateway client authenticates on `/system/*`.
    pub fn client_auth(&self) -> Auth {
        self.auth.client_auth()
    }

    /// The retry settings of a function without `com.openfaas.retry.*` annotations.
    pub fn retry_defaults(&self) -> RetrySettings {
        RetrySettings::new(
            self.max_retries.saturating_add(1),
            self.initial_retry_wait,
            self.max_retry_wait,
        )
    }
}

/// Builds a [`ControllerConfig`] in code.
#[derive(Debug, Clone)]
pub struct ControllerConfigBuilder {
    config: ControllerConfig,
}

macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl ControllerConfigBuilder {
            $(
                #[doc = concat!("Sets `", stringify!($name), "`.")]
                pub fn $name(mut self, value: impl Into<$ty>) -> Self {
                    self.config.$name = value.into();
                    self
                }
            )*
        }
    };
}

setters! {
    gateway_url: String,
    upstream_timeout: Duration,
    rebuild_interval: Duration,
    topic_delimiter: String,
    asynchronous_invocation: bool,
    content_type: String,
    print_response: bool,
    print_response_body: bool,
    print_request_body: bool,
    cloudevents: bool,
    auth: AuthArgs,
    max_inflight: usize,
    max_retries: u32,
    initial_retry_wait: Duration,
    max_retry_wait: Duration,
    metrics_port: u16,
}

impl ControllerConfigBuilder {
    /// Sets `basic_auth`.
    pub fn basic_auth(mut self, on: bool) -> Self {
        self.config.auth.basic_auth = on;
        self
    }

    /// Sets `secret_mount_path`.
    pub fn secret_mount_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.auth.secret_mount_path = dir.into();
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<ControllerConfig, ConfigError> {
        self.config.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_openfaas_env_names() {
        let c = ControllerConfig::from_lookup(env(&[
            ("gateway_url", "http://gateway.openfaas:8080/"),
            ("upstream_timeout", "2m"),
            ("rebuild_interval", "5"),
            ("topic_delimiter", ";"),
            ("asynchronous_invocation", "true"),
            ("content_type", "application/json"),
            ("print_response_body", "1"),
            ("basic_auth", "t"),
            ("secret_mount_path", "/run/secrets"),
            ("max_inflight", "8"),
            ("max_retries", "3"),
            ("metrics_port", "0"),
            ("cloudevents", "Binary"),
        ]))
        .expect("valid");
        assert!(c.cloudevents);
        assert!(ControllerConfig::from_lookup(env(&[("cloudevents", "structured")])).is_err());
        assert_eq!(c.gateway_url, "http://gateway.openfaas:8080");
        assert_eq!(c.upstream_timeout, Duration::from_secs(120));
        assert_eq!(c.rebuild_interval, Duration::from_secs(5));
        assert_eq!(c.topic_delimiter, ";");
        assert!(c.asynchronous_invocation && c.print_response_body && c.auth.basic_auth);
        assert_eq!(c.content_type, "application/json");
        assert_eq!(c.max_inflight, 8);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.metrics_port, 0);
        assert_eq!(c.retry_defaults().attempts, 4);
    }

    #[test]
    fn defaults_are_openfaas_like() {
        let c = ControllerConfig::from_lookup(env(&[])).expect("valid");
        assert_eq!(c, ControllerConfig::default());
        assert_eq!(c.upstream_timeout, Duration::from_secs(60));
        assert_eq!(c.rebuild_interval, Duration::from_secs(10));
        assert_eq!(c.topic_delimiter, ",");
        assert_eq!(c.auth.secret_mount_path, PathBuf::from("/var/secrets"));
        assert!(c.print_response);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v, needle) in [
            ("upstream_timeout", "soon", "upstream_timeout"),
            ("gateway_url", "gateway:8080", "http://"),
            ("rebuild_interval", "0s", "longer than zero"),
            ("basic_auth", "maybe", "basic_auth"),
            ("max_inflight", "0", "at least 1"),
            ("content_type", "text/plain\u{7}", "visible ASCII"),
            ("max_retries", "-1", "whole number"),
            ("metrics_port", "70000", "0-65535"),
        ] {
            let err = ControllerConfig::from_lookup(env(&[(k, v)])).expect_err(k);
            let text = err.to_string();
            assert!(text.contains(needle) && text.contains(k), "{k}: {text}");
        }
    }

    #[test]
    fn builder_validates() {
        let c = ControllerConfig::builder()
            .gateway_url("http://127.0.0.1:1")
            .max_retries(2u32)
            .build()
            .expect("valid");
        assert_eq!(c.max_retries, 2);
        assert!(
            ControllerConfig::builder()
                .initial_retry_wait(Duration::from_secs(60))
                .build()
                .is_err()
        );
        assert!(
            ControllerConfig::builder()
                .gateway_url("nope")
                .build()
                .is_err()
        );
    }
}
