//! Keep-alive HTTP/1.1 connections, pooled per thread: the gateway's proxy to function replicas,
//! the connectors' calls to the gateway and the queue worker's callbacks.
//!
//! Each runtime thread keeps its own idle connections (and each upstream's `Host` value), so a
//! call takes and gives back a connection under a lock no other thread contends for, with no
//! task spawned to watch the connection become reusable: the response body hands its
//! connection back when it has been read to the end (a body dropped before its end closes
//! the connection, as HTTP/1.1 requires). A connection that is not yet ready (its last
//! exchange still finishing) is left for a later call; closed and expired ones are dropped
//! when met, and by a sweeper task every half idle timeout. A request an idle connection could
//! not take (it closed in the meantime) goes once more, over a new connection.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Full};
//! use tributary_core::http::pool::Pools;
//!
//! let pools = Pools::new(tributary_core::http::POOL_IDLE_TIMEOUT, 64);
//! let to: std::net::SocketAddr = "127.0.0.1:8080".parse()?;
//! let request = http::Request::get("/healthz").body(Full::new(bytes::Bytes::new()))?;
//! let answer = pools.send(&to, request).await?;
//! let body = answer.into_body().collect().await?.to_bytes(); // read to the end: kept alive
//! # Ok(()) }
//! ```

mod body;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;
use tokio::net::TcpStream;

pub use body::PooledBody;

/// Upstreams one thread keeps, at most: past it, it forgets them all (closing their idle
/// connections) and starts again.
const UPSTREAMS_KEPT: usize = 4096;
/// TCP keep-alive probes start after this long without traffic (a vanished peer is noticed).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Where a pooled connection goes: an address, or a host name resolved when connecting.
pub trait Endpoint: Eq + Hash + Clone + fmt::Display + Send + Sync + Unpin + 'static {
    /// Opens a TCP connection to it.
    fn open(&self) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Endpoint for SocketAddr {
    async fn open(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(*self).await
    }
}

impl Endpoint for Authority {
    async fn open(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(host_and_port(self)).await
    }
}

/// The name or address to connect to and the port (80 unless given): an IPv6 address without
/// the brackets it has in a URL.
fn host_and_port(authority: &Authority) -> (&str, u16) {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (host, authority.port_u16().unwrap_or(80))
}

/// What a request body must be to be sent on a pooled connection.
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn StdError + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// Why a pooled request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The endpoint's name cannot be sent as a `Host` header.
    #[error("{to} cannot be a Host header value")]
    Host {
        /// The endpoint.
        to: String,
        /// Why.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// No TCP connection could be opened: is it running, listening on that port?
    #[error("cannot connect to {to}")]
    Connect {
        /// The endpoint.
        to: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke, or the request or answer was not valid HTTP/1.1.
    #[error("the HTTP exchange with {to} failed")]
    Exchange {
        /// The endpoint.
        to: String,
        /// What hyper said (its cause may be the request body's error).
        #[source]
        source: hyper::Error,
    },
}

impl PoolError {
    fn connect(to: &impl Endpoint, source: std::io::Error) -> Self {
        Self::Connect {
            to: to.to_string(),
            source,
        }
    }

    fn exchange(to: &impl Endpoint, source: hyper::Error) -> Self {
        Self::Exchange {
            to: to.to_string(),
            source,
        }
    }
}

/// Idle connections of every thread, to endpoints `K`, for requests with bodies `B`.
pub struct Pools<K: Endpoint, B: RequestBody> {
    threads: ThreadLocal<Mutex<HashMap<K, Upstream<B>>>>,
    idle_timeout: Duration,
    max_idle: usize,
    sweeper_started: AtomicBool,
}

impl<K: Endpoint, B: RequestBody> fmt::Debug for Pools<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools")
            .field("idle_timeout", &self.idle_timeout)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// One upstream as one thread knows it.
struct Upstream<B> {
    /// The `Host` header value for it (written once, not per call).
    host: HeaderValue,
    /// Its idle connections, the most recently used last.
    idle: Vec<Idle<B>>,
}

/// An idle connection and since when.
struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Idle<B> {
    /// Whether it can still be used: open, and idle for less than `idle_timeout`.
    fn usable(&self, idle_timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < idle_timeout
    }
}

impl<K: Endpoint, B: RequestBody> Pools<K, B> {
    /// Pools whose connections close after `idle_timeout` unused, keeping at most `max_idle`
    /// idle connections per endpoint and thread (past it, the newest is closed).
    pub fn new(idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            threads: ThreadLocal::new(),
            idle_timeout,
            max_idle,
            sweeper_started: AtomicBool::new(false),
        })
    }

    /// Sends `request` to `to` over an idle connection of this thread or a new one, in origin
    /// form with `to` as its `Host`; the answer's body gives the connection back once read to
    /// the end. No timeout: the caller bounds the call.
    pub async fn send(
        self: &Arc<Self>,
        to: &K,
        request: Request<B>,
    ) -> Result<Response<PooledBody<K, B>>, PoolError> {
        let (mut parts, body) = request.into_parts();
        let (host, idle) = self.checkout(to)?;
        if parts.uri.scheme().is_some() || parts.uri.path_and_query().is_none() {
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        parts.headers.insert(header::HOST, host);
        let (response, sender) = exchange(to, idle, Request::from_parts(parts, body)).await?;
        let (parts, body) = response.into_parts();
        let body = PooledBody::new(body, self.clone(), to.clone(), sender);
        Ok(Response::from_parts(parts, body))
    }

    fn this_thread(&self) -> MutexGuard<'_, HashMap<K, Upstream<B>>> {
        self.threads
            .get_or_default()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `to`'s `Host` value, and a connection to it that is ready for a request if this
    /// thread has one idle.
    fn checkout(&self, to: &K) -> Result<(HeaderValue, Option<SendRequest<B>>), PoolError> {
        let mut upstreams = self.this_thread();
        if let Some(upstream) = upstreams.get_mut(to) {
            let ready = upstream.take_ready(self.idle_timeout);
            return Ok((upstream.host.clone(), ready));
        }
        let host = HeaderValue::try_from(to.to_string()).map_err(|source| PoolError::Host {
            to: to.to_string(),
            source,
        })?;
        if upstreams.len() >= UPSTREAMS_KEPT {
            upstreams.clear();
        }
        let upstream = Upstream {
            host: host.clone(),
            idle: Vec::new(),
        };
        upstreams.insert(to.clone(), upstream);
        Ok((host, None))
    }

    /// Gives `sender` back to this thread's pool, to be used again.
    fn checkin(self: &Arc<Self>, to: &K, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        if !self.sweeper_started.swap(true, Ordering::Relaxed) {
            self.start_sweeper();
        }
        let mut upstreams = self.this_thread();
        if let Some(upstream) = upstreams.get_mut(to)
            && upstream.idle.len() < self.max_idle
        {
            upstream.idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for longer than the timeout, drops the closed ones.
    fn sweep(&self) {
        for thread in self.threads.iter() {
            let mut upstreams = thread.lock().unwrap_or_else(PoisonError::into_inner);
            for upstream in upstreams.values_mut() {
                upstream.idle.retain(|idle| idle.usable(self.idle_timeout));
            }
        }
    }

    /// Sweeps every half idle timeout until the pools are dropped. Started on the first
    /// check-in, inside the runtime.
    fn start_sweeper(self: &Arc<Self>) {
        let pools: Weak<Self> = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(10));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pools) = pools.upgrade() else {
                    return;
                };
                pools.sweep();
            }
        });
    }

    /// How many idle connections this thread keeps for `to`.
    pub fn idle_here(&self, to: &K) -> usize {
        self.this_thread()
            .get(to)
            .map_or(0, |upstream| upstream.idle.len())
    }
}

impl<B> Upstream<B> {
    /// The most recently used idle connection that is ready; drops closed and expired ones on
    /// the way, and leaves those still finishing their last exchange.
    fn take_ready(&mut self, idle_timeout: Duration) -> Option<SendRequest<B>> {
        let mut at = self.idle.len();
        while at > 0 {
            at -= 1;
            let idle = &self.idle[at];
            if !idle.usable(idle_timeout) {
                self.idle.swap_remove(at);
            } else if idle.sender.is_ready() {
                return Some(self.idle.swap_remove(at).sender);
            }
        }
        None
    }
}

/// Sends `request` over `idle` (or a new connection to `to`); a request the idle connection
/// could not take (it closed in the meantime) goes once more, over a new connection.
async fn exchange<K: Endpoint, B: RequestBody>(
    to: &K,
    idle: Option<SendRequest<B>>,
    request: Request<B>,
) -> Result<(Response<hyper::body::Incoming>, SendRequest<B>), PoolError> {
    let failed = |source| PoolError::exchange(to, source);
    let mut sender = match idle {
        Some(sender) => sender,
        None => connect(to).await?,
    };
    match sender.try_send_request(request).await {
        Ok(response) => Ok((response, sender)),
        Err(mut e) => {
            let Some(request) = e.take_message() else {
                return Err(failed(e.into_error()));
            };
            let mut sender = connect(to).await?;
            let response = sender.send_request(request).await.map_err(failed)?;
            Ok((response, sender))
        }
    }
}

/// Opens a connection to `to` (no Nagle delay, TCP keep-alive) and starts driving it.
async fn connect<K: Endpoint, B: RequestBody>(to: &K) -> Result<SendRequest<B>, PoolError> {
    let failed = |source| PoolError::connect(to, source);
    let stream = to.open().await.map_err(failed)?;
    stream.set_nodelay(true).map_err(failed)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(failed)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| PoolError::exchange(to, source))?;
    let to = to.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%to, error = %e, "pooled connection ended");
        }
    });
    Ok(sender)
}
