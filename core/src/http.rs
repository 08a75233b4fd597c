//! The one way Tributary builds HTTP clients: TCP_NODELAY, pooled keep-alive, a timeout, and an
//! error when the client cannot be built (never a silent fallback to a client without timeouts).

mod plain;

use std::time::Duration;

pub use plain::{Answer, PlainHttp};

/// The HTTP client could not be built (e.g. no TLS backend could be initialised).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client ({user_agent})")]
pub struct HttpClientError {
    /// The client's user agent, naming what it was for.
    pub user_agent: String,
    /// What reqwest said.
    #[source]
    pub source: reqwest::Error,
}

/// A client sending `user_agent`, whose requests time out after `timeout` (none when `None`),
/// keeping up to `max_idle_per_host` idle connections per host.
pub fn http_client(
    user_agent: &str,
    timeout: Option<Duration>,
    max_idle_per_host: usize,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle_per_host)
        .user_agent(user_agent);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().map_err(|source| HttpClientError {
        user_agent: user_agent.to_owned(),
        source,
    })
}

/// Headers that apply to one connection only (RFC 9110 7.6.1) and are never forwarded, stored
/// or replayed.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The topic a connector's call delivers a message of.
pub const X_TOPIC: http::HeaderName = http::HeaderName::from_static("x-topic");
/// The connector that made a call.
pub const X_CONNECTOR: http::HeaderName = http::HeaderName::from_static("x-connector");
/// The attempt number of a connector's delivery (1 for the first, 2 for the first retry), so
/// the gateway can count retries per connector and topic.
pub const X_DELIVERY_ATTEMPT: http::HeaderName =
    http::HeaderName::from_static("x-delivery-attempt");

/// Whether a (lower-case) header name is hop-by-hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}
