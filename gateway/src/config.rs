//! The gateway's settings, declared once (OpenFaaS env names).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tributary_core::auth::AuthArgs;
use tributary_core::units::{parse_port, parse_positive_duration, parse_size};

/// Settings of one gateway instance.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(mut_arg("basic_auth", |a| a.default_value("true")))]
pub struct GatewayConfig {
    /// Port of the REST API.
    #[arg(long, env = "port", default_value = "8080", value_parser = parse_port)]
    pub port: u16,
    /// Address to bind: all addresses (0.0.0.0) with basic auth on, 127.0.0.1 with
    /// basic_auth=false, unless set.
    #[arg(long = "bind", env = "bind_address")]
    pub bind_address: Option<IpAddr>,
    /// Folder for the gateway's state: generated credentials, the embedded queue, secrets,
    /// captured logs (default: $STATE_DIRECTORY, /var/lib/tributary for root, else
    /// $XDG_STATE_HOME/tributary or ~/.local/state/tributary).
    #[arg(long, env = "state_dir")]
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a function may take to answer (Go duration or seconds).
    #[arg(long, env = "upstream_timeout", default_value = "60s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,
    /// Largest request body (bytes, or with K/M/G); larger bodies get 413.
    #[arg(long, env = "max_body_size", default_value = "32M", value_parser = parse_size)]
    pub max_body_size: usize,
    /// Namespace of functions deployed or called without one (faas-netes' function_namespace).
    #[arg(long, env = "function_namespace", default_value = tributary_core::model::DEFAULT_NAMESPACE, value_parser = parse_namespace)]
    pub function_namespace: String,
    /// Basic auth on /system/*.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// How long a client may take to send a request's headers; idle keep-alive connections
    /// close after it too.
    #[arg(long, env = "read_timeout", default_value = "10s", value_parser = parse_positive_duration)]
    pub read_timeout: Duration,
    /// Connections open at once (0: three quarters of the open-files limit); more wait.
    #[arg(long, env = "max_connections", default_value = "0", value_parser = tributary_core::units::parse_whole)]
    pub max_connections: u32,
    /// Threads serving HTTP, each with its own event loop as nginx's workers (0: one per
    /// available CPU).
    #[arg(long, env = "http_workers", default_value = "0", value_parser = tributary_core::units::parse_whole)]
    pub http_workers: u32,
    /// How long open requests get to finish at shutdown before connections are closed.
    #[arg(long, env = "shutdown_grace", default_value = "10s", value_parser = tributary_core::units::parse_duration)]
    pub shutdown_grace: Duration,
    /// Most replicas a function may have (com.openfaas.scale.max may lower it); deploys and
    /// scales above it get 400.
    #[arg(long, env = "max_replicas", default_value = "20", value_parser = parse_replicas)]
    pub max_replicas: u64,
    /// The autoscaler.
    #[command(flatten)]
    pub autoscaler: crate::autoscaler::AutoscalerConfig,
    /// Hosts `X-Callback-Url` may name (comma-separated `host`, `*.domain`, `host:port`; `*`
    /// or empty: any, as OpenFaaS); other callbacks get 400.
    #[arg(long, env = "callback_allow", default_value = "*")]
    pub callback_allow: crate::callback::CallbackAllow,
}

fn parse_namespace(value: &str) -> Result<String, String> {
    tributary_core::model::validate_name("namespace", value)?;
    Ok(value.to_owned())
}

fn parse_replicas(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "{value:?}: max_replicas must be a whole number of at least 1"
        )),
        Ok(n) => Ok(n),
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

impl GatewayConfig {
    /// The address to bind: `bind_address`, else every address with basic auth on and only the
    /// loopback one without.
    pub fn bind_ip(&self) -> IpAddr {
        self.bind_address.unwrap_or(if self.auth.basic_auth {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        })
    }

    /// The server's limits, with `max_connections=0` resolved from the open-files limit.
    pub fn server_limits(&self) -> crate::server::ServerLimits {
        let max_connections = match self.max_connections {
            0 => {
                let (soft, _) =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                        .unwrap_or((1024, 1024));
                usize::try_from(soft.saturating_sub(64) / 4 * 3)
                    .unwrap_or(usize::MAX)
                    .max(16)
            }
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        crate::server::ServerLimits {
            read_timeout: self.read_timeout,
            max_connections,
            shutdown_grace: self.shutdown_grace,
            workers: match self.http_workers {
                0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
        }
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_ip(), self.port)
    }

    /// `host:port` to reach this gateway from this machine (loopback when bound to any address).
    pub fn local_authority(&self, port: u16) -> String {
        match self.bind_ip() {
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
        assert!(c.auth.basic_auth, "auth is on by default");
        assert_eq!(c.listen_addr().to_string(), "0.0.0.0:8080");
        let open = GatewayConfig {
            auth: AuthArgs {
                basic_auth: false,
                ..c.auth.clone()
            },
            ..c.clone()
        };
        assert_eq!(
            open.listen_addr().to_string(),
            "127.0.0.1:8080",
            "auth off binds loopback"
        );
        assert_eq!(c.max_body_size, 32 << 20);
        assert_eq!(
            c.auth.secret_mount_path,
            PathBuf::from("/var/openfaas/secrets")
        );
        assert_eq!(c.local_authority(9), "127.0.0.1:9");
    }

    #[test]
    fn clients_drop_idle_connections_before_the_gateway_closes_them() {
        // Otherwise a connector's call made as the gateway closes its idle connection fails.
        let c = GatewayConfig::default();
        assert!(tributary_core::http::POOL_IDLE_TIMEOUT < c.read_timeout);
    }
}
