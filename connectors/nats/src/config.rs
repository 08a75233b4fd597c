//! The NATS connector's settings, declared once (OpenFaaS nats-connector names where they
//! exist), and the client options built from them.

use std::path::PathBuf;
use std::time::Duration;

use tributary_core::units::parse_positive_duration;

use crate::{CONNECTOR_NAME, NatsError};

/// Core or JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Queue-group subscriptions; at-most-once.
    #[default]
    Core,
    /// A durable JetStream pull consumer; at-least-once.
    JetStream,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "core" => Ok(Self::Core),
            "jetstream" | "js" => Ok(Self::JetStream),
            other => Err(format!(
                "nats_mode must be `core` or `jetstream`, not {other:?}"
            )),
        }
    }
}

/// NATS connector settings.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "nats_url")]
    pub nats_url: Option<String>,
    /// NATS host or host:port (OpenFaaS name), used when nats_url is not given.
    #[arg(long, env = "broker_host", default_value = "127.0.0.1")]
    pub broker_host: String,
    /// Subjects to subscribe to, comma separated (wildcards * and > allowed).
    #[arg(long = "topics", env = "topics", value_delimiter = ',')]
    pub subjects: Vec<String>,
    /// `core` (queue group, at-most-once) or `jetstream` (durable consumer, at-least-once).
    #[arg(
        long = "nats-mode",
        alias = "mode",
        env = "nats_mode",
        default_value = "core"
    )]
    pub mode: Mode,
    /// Queue group of core subscriptions.
    #[arg(long, env = "queue_group", default_value = "tributary-nats-connector")]
    pub queue_group: String,
    /// JetStream stream (created with the topics as subjects when missing).
    #[arg(long, env = "stream", default_value = "tributary-events")]
    pub stream: String,
    /// JetStream durable consumer.
    #[arg(long, env = "consumer", default_value = "tributary-nats-connector")]
    pub consumer: String,
    /// Subject dead letters are published to (JetStream); without one they are logged and
    /// terminated.
    #[arg(long, env = "dead_letter_subject")]
    pub dead_letter_subject: Option<String>,
    /// How long a JetStream delivery may go unacknowledged before redelivery.
    #[arg(long, env = "ack_wait", default_value = "30s", value_parser = parse_positive_duration)]
    pub ack_wait: Duration,
    /// User name (with nats_password).
    #[arg(long = "nats-user", alias = "user", env = "nats_user")]
    pub user: Option<String>,
    /// Password (with nats_user).
    #[arg(long = "nats-password", alias = "password", env = "nats_password")]
    pub password: Option<String>,
    /// Token.
    #[arg(long = "nats-token", alias = "token", env = "nats_token")]
    pub token: Option<String>,
    /// Credentials (.creds) file: JWT and NKey.
    #[arg(long = "nats-creds", alias = "creds", env = "nats_creds")]
    pub creds_file: Option<PathBuf>,
    /// CA certificate to trust.
    #[arg(long = "nats-tls-ca", alias = "tls-ca", env = "nats_tls_ca")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (with nats_tls_key).
    #[arg(long = "nats-tls-cert", alias = "tls-cert", env = "nats_tls_cert")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (with nats_tls_cert).
    #[arg(long = "nats-tls-key", alias = "tls-key", env = "nats_tls_key")]
    pub tls_key: Option<PathBuf>,
    /// Unacknowledged JetStream deliveries at once (the runtime's `max_inflight`), which bounds
    /// redeliveries after a crash to the messages in flight.
    #[arg(skip = 64usize)]
    pub max_ack_pending: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

/// Turns `broker_host` (`host` or `host:port`) into a NATS URL.
pub fn url_from_broker_host(host: &str) -> String {
    let host = host.trim();
    if host.contains("://") {
        host.to_owned()
    } else if host.contains(':') {
        format!("nats://{host}")
    } else {
        format!("nats://{host}:4222")
    }
}

impl NatsConfig {
    /// The server URL(s): `nats_url`, else one built from `broker_host`.
    pub fn url(&self) -> String {
        self.nats_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| url_from_broker_host(&self.broker_host))
    }

    /// The subjects, trimmed, without empty entries.
    pub fn subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Checks the settings go together; the error names them.
    pub fn validate(&self) -> Result<(), NatsError> {
        if self.subjects().is_empty() {
            return Err(NatsError::Config(
                "topics is empty: name the subjects to subscribe to, e.g. topics=orders,events.>"
                    .into(),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(NatsError::Config(
                "nats_user and nats_password go together".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(NatsError::Config(
                "nats_tls_cert and nats_tls_key go together".into(),
            ));
        }
        Ok(())
    }

    /// The client options: name, credentials and TLS.
    pub(crate) async fn options(&self) -> Result<async_nats::ConnectOptions, NatsError> {
        let mut options = match &self.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|source| NatsError::Creds {
                    path: path.clone(),
                    source,
                })?,
            None => async_nats::ConnectOptions::new(),
        }
        .name(CONNECTOR_NAME);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_ca.is_some() || self.tls_cert.is_some() {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_host_becomes_a_url() {
        assert_eq!(url_from_broker_host("nats"), "nats://nats:4222");
        assert_eq!(url_from_broker_host("nats:4223"), "nats://nats:4223");
        assert_eq!(url_from_broker_host("tls://nats:4222"), "tls://nats:4222");
    }

    #[test]
    fn settings_are_checked_together() {
        let mut c = NatsConfig::default();
        assert!(c.validate().unwrap_err().to_string().contains("topics"));
        c.subjects = vec![" orders ".into(), String::new()];
        assert_eq!(c.subjects(), ["orders"]);
        c.user = Some("u".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("nats_password")
        );
        assert_eq!("JS".parse::<Mode>(), Ok(Mode::JetStream));
        assert!("fast".parse::<Mode>().unwrap_err().contains("nats_mode"));
    }
}
