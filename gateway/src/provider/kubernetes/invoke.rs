//! Invocation: a ready address of the function's Endpoints, round-robin; a call to a function at
//! zero replicas scales it to one and waits (bounded by `upstream_timeout`) for an endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use k8s_openapi::api::core::v1::Endpoints;

use super::cache::NamespaceCache;
use super::{ENDPOINT_POLL, KubernetesProvider, objects, status};
use crate::error::GatewayError;
use crate::provider::Provider;

impl KubernetesProvider {
    /// The ready addresses of a function's Service.
    pub(super) fn addresses(
        cache: &NamespaceCache,
        name: &str,
        namespace: &str,
    ) -> Vec<SocketAddr> {
        let Some(endpoints) = cache.endpoints(name, namespace) else {
            return Vec::new();
        };
        ready_addresses(&endpoints)
    }

    /// Waits for a ready endpoint; a function at zero replicas is scaled to one first.
    pub(super) async fn wait_for_endpoint(
        &self,
        cache: &NamespaceCache,
        name: &str,
        namespace: &str,
    ) -> Result<SocketAddr, GatewayError> {
        let started = Instant::now();
        if cache
            .deployment(name, namespace)
            .is_some_and(|d| status::desired_replicas(&d) == 0)
        {
            tracing::info!(function = %name, namespace, "scaling from zero to 1 replica");
            self.scale(name, namespace, 1).await?;
        }
        loop {
            let addresses = Self::addresses(cache, name, namespace);
            if let Some(addr) = self.pick(&addresses) {
                return Ok(addr);
            }
            if started.elapsed() >= self.upstream_timeout || self.cancel.is_cancelled() {
                return Err(GatewayError::NoReplicas {
                    name: name.to_owned(),
                    waited_secs: started.elapsed().as_secs_f64(),
                });
            }
            tokio::time::sleep(ENDPOINT_POLL).await;
        }
    }

    pub(super) fn pick(&self, addresses: &[SocketAddr]) -> Option<SocketAddr> {
        if addresses.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % addresses.len();
        Some(addresses[i])
    }
}

/// Every ready address of an Endpoints object, at its `http` port (else its first).
pub(super) fn ready_addresses(endpoints: &Endpoints) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .or(ports.first())
            .map_or(objects::WATCHDOG_PORT, |p| p.port);
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};

    #[test]
    fn ready_addresses_use_the_http_port() {
        let endpoints = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.0.0.7".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "not an ip".into(),
                        ..Default::default()
                    },
                ]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.8".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![
                    EndpointPort {
                        name: Some("metrics".into()),
                        port: 8081,
                        ..Default::default()
                    },
                    EndpointPort {
                        name: Some("http".into()),
                        port: 8080,
                        ..Default::default()
                    },
                ]),
            }]),
            ..Default::default()
        };
        let addrs = ready_addresses(&endpoints);
        assert_eq!(addrs, vec!["10.0.0.7:8080".parse().expect("addr")]);
    }
}
