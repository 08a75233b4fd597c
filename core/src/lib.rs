//! What Tributary's gateway, connector SDK and async queue share, and nothing more: the OpenFaaS
//! model types ([`model`]), a typed client for any OpenFaaS-compatible gateway ([`client`]),
//! settings declared once with clap ([`settings`]) and their value parsers ([`units`]), retry
//! classification and backoff ([`retry`]), basic-auth secrets ([`auth`]), the async queue's
//! interface ([`queue`]), Prometheus helpers ([`metrics`]), the shutdown signal ([`shutdown`]) and
//! the HTTP client builder ([`http`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_core::client::{Auth, GatewayClient};
//!
//! # async fn run() -> Result<(), tributary_core::client::ClientError> {
//! let gateway = GatewayClient::new("http://127.0.0.1:8080", Auth::None, Duration::from_secs(10))?;
//! for f in gateway.functions(None).await? {
//!     println!("{} subscribes to {:?}", f.address(), f.topics(","));
//! }
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod http;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod trace;
pub mod units;

pub use shutdown::shutdown_signal;

/// Shows an error with its causes on one line (`outer: cause: root cause`), for log fields.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut seen = self.0.to_string();
        let mut current = self.0.source();
        while let Some(e) = current {
            let text = e.to_string();
            // Some errors repeat their cause in their own message: print it once.
            if !seen.contains(&text) {
                write!(f, ": {text}")?;
                seen.push_str(&text);
            }
            current = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_prints_causes_once() {
        let e = Outer(std::io::Error::other("root"));
        assert_eq!(Chain(&e).to_string(), "outer: root");
    }
}
