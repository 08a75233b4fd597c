//! The gateway's settings, declared once (OpenFaaS env names).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tributary_core::auth::AuthArgs;
use tributary_core::units::{parse_port, parse_positive_duration, parse_size};

/// Settings of one gateway instance.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct GatewayConfig {
    /// Port of the REST API.
    #[arg(long, env = "port", default_value = "8080", value_parser = parse_port)]
    pub port: u16,
    /// Address to bind.
    #[arg(long = "bind", env = "bind_address", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// How long a function may take to answer (Go duration or seconds).
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,
    /// Largest request body (bytes, or with K/M/G); larger bodies get 413.
    #[arg(long, env = "max_body_size", default_value = "32M", value_parser = parse_size)]
    pub max_body_size: usize,
    /// Basic auth on /system/*.
    #[command(flatten)]
    pub auth: AuthArgs,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

impl GatewayConfig {
    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port)
    }

    /// `host:port` to reach this gateway from this machine (loopback when bound to any address).
    pub fn local_authority(&self, port: u16) -> String {
        match self.bind_address {
            IpAddr::V4(v4) if v4.is_unspecified() => format!("127.0.0.1:{port}"),
            IpAddr::V6(v6) if v6.is_unspecified() => format!("[::1]:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            ip => format!("{ip}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn defaults_follow_openfaas() {
        let c = GatewayConfig::default();
        assert_eq!(c.listen_addr().to_string(), "0.0.0.0:8080");
        assert_eq!(c.max_body_size, 32 << 20);
        assert_eq!(
            c.auth.secret_mount_path,
            PathBuf::from("/var/openfaas/secrets")
        );
        assert_eq!(c.local_authority(9), "127.0.0.1:9");
    }
}
