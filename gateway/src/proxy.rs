//! Reverse proxy to function replicas over pooled HTTP/1.1 keep-alive connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use http_body_util::LengthLimitError;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thread_local::ThreadLocal;

use tributary_core::http::{HOP_BY_HOP, is_hop_by_hop};

use crate::error::GatewayError;
use tributary_core::queue::BoxError;

/// Forwards requests to `host:port` upstreams with a timeout on the response head.
#[derive(Clone)]
pub struct HttpProxy {
    /// Each thread's connection pool.
    clients: Arc<ThreadLocal<Client<HttpConnector, Body>>>,
    /// Each thread's upstreams, as URI authority and `Host` value (written once, not per call).
    upstreams: Arc<ThreadLocal<RefCell<HashMap<SocketAddr, Upstream>>>>,
    timeout: Duration,
    max_body_size: usize,
}

/// An upstream as a URI authority and a `Host` header value.
type Upstream = (Authority, HeaderValue);

/// Upstreams one thread keeps, at most: past it, it forgets them all and starts again.
const UPSTREAMS_KEPT: usize = 4096;

impl HttpProxy {
    /// A proxy whose upstream calls time out after `timeout`.
    pub fn new(timeout: Duration, max_body_size: usize) -> Self {
        Self {
            clients: Default::default(),
            upstreams: Default::default(),
            timeout,
            max_body_size,
        }
    }

    /// `addr` as a URI authority and a `Host` value, from this thread's cache.
    fn upstream(&self, addr: SocketAddr) -> Result<Upstream, GatewayError> {
        let mut upstreams = self.upstreams.get_or_default().borrow_mut();
        if let Some(known) = upstreams.get(&addr) {
            return Ok(known.clone());
        }
        let text = addr.to_string();
        // An upstream's address is the provider's, not the caller's: a failure is internal.
        let invalid = |source: BoxError| GatewayError::Internal {
            what: format!("upstream address {text} cannot be used in a request"),
            source,
        };
        let authority = Authority::try_from(text.as_str()).map_err(|e| invalid(e.into()))?;
        let host = HeaderValue::try_from(text.as_str()).map_err(|e| invalid(e.into()))?;
        if upstreams.len() >= UPSTREAMS_KEPT {
            upstreams.clear();
        }
        upstreams.insert(addr, (authority.clone(), host.clone()));
        Ok((authority, host))
    }

    /// Sends `request` (whose URI holds the function-relative path) to `addr`.
    pub async fn forward(
        &self,
        function: &str,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, body) = request.into_parts();
        let (authority, host) = self.upstream(addr)?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri)
            .map_err(|e| GatewayError::BadRequest(format!("invalid request path: {e}")))?;
        strip_hop_by_hop(&mut parts.headers);
        // As the client would set it (from the URI), without formatting it per call.
        parts.headers.insert(header::HOST, host);
        let body = self.sized(body).await?;
        let request = Request::from_parts(parts, body);
        let client = self.clients.get_or(new_client);
        let response = match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                if is_length_limit(&e) {
                    return Err(GatewayError::PayloadTooLarge {
                        limit: self.max_body_size,
                    });
                }
                return Err(GatewayError::Upstream {
                    name: function.to_owned(),
                    source: Box::new(e),
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

fn new_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
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
