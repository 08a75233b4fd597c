//! Reverse proxy to function replicas over pooled HTTP/1.1 keep-alive connections
//! ([`tributary_core::http::pool`]).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::LengthLimitError;

use tributary_core::http::pool::Pools;
use tributary_core::http::{HOP_BY_HOP, POOL_IDLE_TIMEOUT, is_hop_by_hop};

use crate::error::GatewayError;

/// Idle connections one thread keeps per replica, at most; past it, the newest is closed.
const IDLE_PER_UPSTREAM: usize = 1024;

/// Forwards requests to `host:port` upstreams with a timeout on the response head.
#[derive(Clone)]
pub struct HttpProxy {
    /// Idle connections, per thread.
    pools: Arc<Pools<SocketAddr, Body>>,
    timeout: Duration,
    max_body_size: usize,
}

impl HttpProxy {
    /// A proxy whose upstream calls time out after `timeout`.
    pub fn new(timeout: Duration, max_body_size: usize) -> Self {
        Self {
            // Closed before a function's server may close them.
            pools: Pools::new(POOL_IDLE_TIMEOUT, IDLE_PER_UPSTREAM),
            timeout,
            max_body_size,
        }
    }

    /// Sends `request` (whose URI holds the function-relative path) to `addr`.
    pub async fn forward(
        &self,
        function: &str,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, body) = request.into_parts();
        // Before a connection is taken: a body refused for its size would close it for nothing.
        let body = self.sized(body).await?;
        strip_hop_by_hop(&mut parts.headers);
        let request = Request::from_parts(parts, body);
        let exchange = tokio::time::timeout(self.timeout, self.pools.send(&addr, request));
        let response = match exchange.await {
            Ok(Ok(answered)) => answered,
            Ok(Err(e)) => {
                if is_length_limit(&e) {
                    return Err(GatewayError::PayloadTooLarge {
                        limit: self.max_body_size,
                    });
                }
                return Err(GatewayError::Upstream {
                    name: function.to_owned(),
                    source: e.into(),
                });
            }
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    name: function.to_owned(),
                    timeout_secs: self.timeout.as_secs_f64(),
                });
            }
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

impl HttpProxy {
    /// A body of unknown length (chunked) is read whole first, up to `max_body_size`, so one
    /// over the limit gets 413 before anything reaches the function (which could otherwise
    /// answer while the upload is cut off). Bodies of declared length stream through; their
    /// length was checked on arrival.
    async fn sized(&self, body: Body) -> Result<Body, GatewayError> {
        if body.size_hint().exact().is_some() {
            return Ok(body);
        }
        match axum::body::to_bytes(body, self.max_body_size).await {
            Ok(bytes) => Ok(Body::from(bytes)),
            Err(e) if is_length_limit(&e) => Err(GatewayError::PayloadTooLarge {
                limit: self.max_body_size,
            }),
            Err(e) => Err(GatewayError::BadRequest(format!(
                "reading the request body failed: {e}"
            ))),
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup per listed name.
    if !headers.keys().any(|k| is_hop_by_hop(k.as_str())) {
        return;
    }
    if let Some(listed) = headers.get(header::CONNECTION).cloned()
        && let Ok(listed) = listed.to_str()
    {
        for name in listed.split(',') {
            if let Ok(name) = HeaderName::try_from(name.trim()) {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether an error was caused by a request body over the size limit.
pub(crate) fn is_length_limit(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests;
