//! Connector configuration, read from the environment with OpenFaaS connector-sdk names, or
//! built in code; and the parsers for OpenFaaS-style values (`60s`, `10M`, `true`).

use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable or field has a value that does not parse.
    #[error("invalid {name}={value:?}: {reason}")]
    Invalid {
        /// The env var or field name.
        name: String,
        /// The value given.
        value: String,
        /// Why it is wrong and what would be right.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(name: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// A basic-auth secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("{path} could not be read ({source}); create it or set secret_mount_path")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads `basic-auth-user` and `basic-auth-password` from `dir` (OpenFaaS' `secret_mount_path`),
/// trimming trailing whitespace.
pub fn read_basic_auth(dir: &std::path::Path) -> Result<(String, String), SecretError> {
    let read = |name: &str| -> Result<String, SecretError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| SecretError::Read {
            path: path.clone(),
            source,
        })?;
        let text = text.trim_end().to_owned();
        if text.is_empty() {
            return Err(SecretError::Empty { path });
        }
        Ok(text)
    };
    Ok((read("basic-auth-user")?, read("basic-auth-password")?))
}

/// Everything the controller and the runtime need; field names are the env var names.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// Base URL of the gateway (`gateway_url`).
    pub gateway_url: String,
    /// Timeout of one function call (`upstream_timeout`, default 60s).
    pub upstream_timeout: Duration,
    /// How often the topic map is rebuilt (`rebuild_interval`, default 10s).
    pub rebuild_interval: Duration,
    /// Separator of topics in the `topic` annotation (`topic_delimiter`, default `,`).
    pub topic_delimiter: String,
    /// Invoke `/async-function/NAME` instead of `/function/NAME` (`asynchronous_invocation`).
    pub asynchronous_invocation: bool,
    /// `Content-Type` of requests to functions unless the message has one (`content_type`).
    pub content_type: String,
    /// Log one line per function response (`print_response`, default true).
    pub print_response: bool,
    /// Include the response body in that line (`print_response_body`).
    pub print_response_body: bool,
    /// Log request bodies (`print_request_body`).
    pub print_request_body: bool,
    /// Send basic auth to `/system/*` (`basic_auth`).
    pub basic_auth: bool,
    /// Folder with `basic-auth-user` and `basic-auth-password` (`secret_mount_path`).
    pub secret_mount_path: PathBuf,
    /// Messages in the runtime at once, queued or in flight (`max_inflight`, default 64).
    pub max_inflight: usize,
    /// Retries of a retryable failure before dead-lettering (`max_retries`, default 5).
    pub max_retries: u32,
    /// First retry wait (`initial_retry_wait`, default 100ms); doubles each retry, full jitter.
    pub initial_retry_wait: Duration,
    /// Longest single retry wait, `Retry-After` included (`max_retry_wait`, default 30s).
    pub max_retry_wait: Duration,
    /// Port of the Prometheus `/metrics` endpoint; 0 turns it off (`metrics_port`, default 8081).
    pub metrics_port: u16,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            gateway_url: "http://127.0.0.1:8080".into(),
            upstream_timeout: Duration::from_secs(60),
            rebuild_interval: Duration::from_secs(10),
            topic_delimiter: ",".into(),
            asynchronous_invocation: false,
            content_type: "text/plain".into(),
            print_response: true,
            print_response_body: false,
            print_request_body: false,
            basic_auth: false,
            secret_mount_path: PathBuf::from("/var/secrets"),
            max_inflight: 64,
            max_retries: 5,
            initial_retry_wait: Duration::from_millis(100),
            max_retry_wait: Duration::from_secs(30),
            metrics_port: 8081,
        }
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
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `lookup` (an env var reader), then validates it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("gateway_url") {
            c.gateway_url = v;
        }
        let duration = |k: &str, into: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = get(k) {
                *into = parse_duration(&v).map_err(|e| ConfigError::invalid(k, &v, e))?;
            }
            Ok(())
        };
        duration("upstream_timeout", &mut c.upstream_timeout)?;
        duration("rebuild_interval", &mut c.rebuild_interval)?;
        duration("initial_retry_wait", &mut c.initial_retry_wait)?;
        duration("max_retry_wait", &mut c.max_retry_wait)?;
        let boolean = |k: &str, into: &mut bool| -> Result<(), ConfigError> {
            if let Some(v) = get(k) {
                *into = parse_bool(&v).map_err(|e| ConfigError::invalid(k, &v, e))?;
            }
            Ok(())
        };
        boolean("asynchronous_invocation", &mut c.asynchronous_invocation)?;
        boolean("print_response", &mut c.print_response)?;
        boolean("print_response_body", &mut c.print_response_body)?;
        boolean("print_request_body", &mut c.print_request_body)?;
        boolean("basic_auth", &mut c.basic_auth)?;
        if let Some(v) = lookup("topic_delimiter").filter(|v| !v.is_empty()) {
            c.topic_delimiter = v;
        }
        if let Some(v) = get("content_type") {
            c.content_type = v;
        }
        if let Some(v) = get("secret_mount_path") {
            c.secret_mount_path = PathBuf::from(v);
        }
        let number = |k: &str| -> Result<Option<u64>, ConfigError> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| ConfigError::invalid(k, &v, "expected a whole number"))
                })
                .transpose()
        };
        if let Some(n) = number("max_inflight")? {
            c.max_inflight = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = number("max_retries")? {
            c.max_retries = u32::try_from(n)
                .map_err(|_| ConfigError::invalid("max_retries", n, "too large"))?;
        }
        if let Some(n) = number("metrics_port")? {
            c.metrics_port = u16::try_from(n)
                .map_err(|_| ConfigError::invalid("metrics_port", n, "must be 0-65535"))?;
        }
        c.validate()
    }

    /// Checks the values make sense together; returns the config for chaining.
    pub fn validate(self) -> Result<Self, ConfigError> {
        let url = self.gateway_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 8 {
            return Err(ConfigError::invalid(
                "gateway_url",
                &self.gateway_url,
                "must be an http:// or https:// URL, e.g. http://gateway.openfaas:8080",
            ));
        }
        if reqwest::Url::parse(url).is_err() {
            return Err(ConfigError::invalid(
                "gateway_url",
                &self.gateway_url,
                "is not a valid URL",
            ));
        }
        if self.rebuild_interval.is_zero() {
            return Err(ConfigError::invalid(
                "rebuild_interval",
                "0s",
                "must be longer than zero",
            ));
        }
        if self.upstream_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "upstream_timeout",
                "0s",
                "must be longer than zero",
            ));
        }
        if self.topic_delimiter.is_empty() {
            return Err(ConfigError::invalid(
                "topic_delimiter",
                "",
                "must not be empty",
            ));
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::invalid(
                "max_inflight",
                0,
                "must be at least 1",
            ));
        }
        if self.initial_retry_wait > self.max_retry_wait {
            return Err(ConfigError::invalid(
                "initial_retry_wait",
                humantime::format_duration(self.initial_retry_wait),
                format!(
                    "must not exceed max_retry_wait ({})",
                    humantime::format_duration(self.max_retry_wait)
                ),
            ));
        }
        Ok(Self {
            gateway_url: url.to_owned(),
            ..self
        })
    }
}

/// Builds a [`ControllerConfig`] in code.
#[derive(Debug, Clone)]
pub struct ControllerConfigBuilder {
    config: ControllerConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl ControllerConfigBuilder {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: impl Into<$ty>) -> Self {
                    self.config.$name = value.into();
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets `gateway_url`.
    gateway_url: String,
    /// Sets `upstream_timeout`.
    upstream_timeout: Duration,
    /// Sets `rebuild_interval`.
    rebuild_interval: Duration,
    /// Sets `topic_delimiter`.
    topic_delimiter: String,
    /// Sets `asynchronous_invocation`.
    asynchronous_invocation: bool,
    /// Sets `content_type`.
    content_type: String,
    /// Sets `print_response`.
    print_response: bool,
    /// Sets `print_response_body`.
    print_response_body: bool,
    /// Sets `print_request_body`.
    print_request_body: bool,
    /// Sets `basic_auth`.
    basic_auth: bool,
    /// Sets `secret_mount_path`.
    secret_mount_path: PathBuf,
    /// Sets `max_inflight`.
    max_inflight: usize,
    /// Sets `max_retries`.
    max_retries: u32,
    /// Sets `initial_retry_wait`.
    initial_retry_wait: Duration,
    /// Sets `max_retry_wait`.
    max_retry_wait: Duration,
    /// Sets `metrics_port`.
    metrics_port: u16,
}

impl ControllerConfigBuilder {
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<ControllerConfig, ConfigError> {
        self.config.validate()
    }
}

/// Parses a duration the way OpenFaaS components do: a Go-style duration (`1m30s`, `500ms`)
/// or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty duration: use e.g. 60s, 1m30s or 500ms".into());
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration {value:?}: must be zero or more"));
    }
    humantime::parse_duration(v)
        .map_err(|e| format!("invalid duration {value:?} ({e}): use e.g. 60s, 1m30s or 500ms"))
}

/// Parses a byte size: a number with an optional `K`, `M` or `G` suffix (powers of 1024,
/// `KB`/`KiB`/`Mi` spellings accepted).
pub fn parse_size(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {value:?}: use bytes or e.g. 512K, 10M, 1G"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {value:?}: use K, M or G"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {value:?} is too large"))
}

/// Parses `true/false`, `1/0`, `yes/no`, `on/off`.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
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
            ("basic_auth", "yes"),
            ("secret_mount_path", "/run/secrets"),
            ("max_inflight", "8"),
            ("max_retries", "3"),
            ("metrics_port", "0"),
        ]))
        .expect("valid");
        assert_eq!(c.gateway_url, "http://gateway.openfaas:8080");
        assert_eq!(c.upstream_timeout, Duration::from_secs(120));
        assert_eq!(c.rebuild_interval, Duration::from_secs(5));
        assert_eq!(c.topic_delimiter, ";");
        assert!(c.asynchronous_invocation && c.print_response_body && c.basic_auth);
        assert_eq!(c.content_type, "application/json");
        assert_eq!(c.max_inflight, 8);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.metrics_port, 0);
    }

    #[test]
    fn defaults_are_openfaas_like() {
        let c = ControllerConfig::from_lookup(env(&[])).expect("valid");
        assert_eq!(c.upstream_timeout, Duration::from_secs(60));
        assert_eq!(c.rebuild_interval, Duration::from_secs(10));
        assert_eq!(c.topic_delimiter, ",");
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
            ("max_retries", "-1", "whole number"),
            ("metrics_port", "70000", "0-65535"),
        ] {
            let err = ControllerConfig::from_lookup(env(&[(k, v)])).expect_err(k);
            assert!(err.to_string().contains(needle), "{k}: {err}");
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
    }

    #[test]
    fn durations_sizes_and_booleans_parse() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("banana").is_err());
        assert!(parse_duration("-3").is_err());
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("10X").is_err());
        assert_eq!(parse_bool("On"), Ok(true));
        assert!(parse_bool("2").is_err());
    }
}
