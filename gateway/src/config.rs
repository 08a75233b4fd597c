//! Gateway configuration and the parsers for OpenFaaS-style values (`60s`, `10MB`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one gateway instance.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address the API listens on.
    pub bind: SocketAddr,
    /// How long a function may take to answer (`upstream_timeout`).
    pub upstream_timeout: Duration,
    /// Largest request body accepted, in bytes (`max_body_size`).
    pub max_body_size: usize,
    /// Whether `/system/*` requires basic auth (`basic_auth`).
    pub basic_auth: bool,
    /// Folder holding `basic-auth-user` and `basic-auth-password` (`secret_mount_path`).
    pub secret_mount_path: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream_timeout: Duration::from_secs(60),
            max_body_size: 32 * 1024 * 1024,
            basic_auth: false,
            secret_mount_path: PathBuf::from("/var/openfaas/secrets"),
        }
    }
}

pub use tributary_connector_sdk::config::{parse_duration, parse_size};
