//! Keep-alive connections to function replicas, pooled per thread.
//!
//! Each runtime thread keeps its own idle connections (and each upstream's `Host` value), so a
//! call takes and gives back a connection under a lock no other thread contends for, with no
//! task spawned to watch the connection become reusable: the response body hands its
//! connection back when it has been read to the end (a body dropped before its end closes
//! the connection, as HTTP/1.1 requires). A connection that is not yet ready (its last
//! exchange still finishing) is left for a later call; closed and expired ones are dropped
//! when met, and by a sweeper task every half idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;
use tokio::net::TcpStream;

use tributary_core::http::POOL_IDLE_TIMEOUT;
use tributary_core::queue::BoxError;

/// A connection's request half.
pub(super) type Sender = SendRequest<Body>;

/// Idle connections one thread keeps per upstream, at most; past it, the newest is closed.
const IDLE_PER_UPSTREAM: usize = 1024;
/// Upstreams one thread keeps, at most: past it, it forgets them all (closing their idle
/// connections) and starts again.
const UPSTREAMS_KEPT: usize = 4096;
/// TCP keep-alive probes start after this long without traffic (a vanished replica is noticed).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Every thread's idle connections.
pub(super) struct Pools {
    threads: ThreadLocal<Mutex<Upstreams>>,
    idle_timeout: Duration,
    sweeper_started: AtomicBool,
}

/// One thread's upstreams.
type Upstreams = HashMap<SocketAddr, Upstream>;

/// One upstream as one thread knows it.
struct Upstream {
    /// The `Host` header value for it (written once, not per call).
    host: HeaderValue,
    /// Its idle connections, the most recently used last.
    idle: Vec<Idle>,
}

/// An idle connection and since when.
struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    /// Whether it can still be used: open, and idle for less than `idle_timeout`.
    fn usable(&self, idle_timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < idle_timeout
    }
}

impl Pools {
    /// Pools whose connections close after `idle_timeout` unused.
    pub(super) fn new(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            threads: ThreadLocal::new(),
            idle_timeout,
            sweeper_started: AtomicBool::new(false),
        })
    }

    /// Pools whose connections close after [`POOL_IDLE_TIMEOUT`] unused (before a function's
    /// server may close them).
    pub(super) fn with_defaults() -> Arc<Self> {
        Self::new(POOL_IDLE_TIMEOUT)
    }

    fn this_thread(&self) -> MutexGuard<'_, Upstreams> {
        self.threads
            .get_or_default()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `addr`'s `Host` value, and a connection to it that is ready for a request if this
    /// thread has one idle.
    pub(super) fn checkout(
        &self,
        addr: SocketAddr,
    ) -> Result<(HeaderValue, Option<Sender>), http::header::InvalidHeaderValue> {
        let mut upstreams = self.this_thread();
        if let Some(upstream) = upstreams.get_mut(&addr) {
            let ready = upstream.take_ready(self.idle_timeout);
            return Ok((upstream.host.clone(), ready));
        }
        let host = HeaderValue::try_from(addr.to_string())?;
        if upstreams.len() >= UPSTREAMS_KEPT {
            upstreams.clear();
        }
        let upstream = Upstream {
            host: host.clone(),
            idle: Vec::new(),
        };
        upstreams.insert(addr, upstream);
        Ok((host, None))
    }

    /// Gives `sender` back to this thread's pool, to be used again.
    fn checkin(self: &Arc<Self>, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if !self.sweeper_started.swap(true, Ordering::Relaxed) {
            self.start_sweeper();
        }
        let mut upstreams = self.this_thread();
        if let Some(upstream) = upstreams.get_mut(&addr)
            && upstream.idle.len() < IDLE_PER_UPSTREAM
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

    /// How many idle connections this thread's pool holds for `addr` (for tests).
    #[cfg(test)]
    pub(super) fn idle_here(&self, addr: SocketAddr) -> usize {
        self.this_thread()
            .get(&addr)
            .map_or(0, |upstream| upstream.idle.len())
    }
}

impl Upstream {
    /// The most recently used idle connection that is ready; drops closed and expired ones on
    /// the way, and leaves those still finishing their last exchange.
    fn take_ready(&mut self, idle_timeout: Duration) -> Option<Sender> {
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

/// Opens a connection to `addr` (no Nagle delay, TCP keep-alive) and starts driving it.
pub(super) async fn connect(addr: SocketAddr) -> Result<Sender, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "connection to a function replica ended");
        }
    });
    Ok(sender)
}

/// A response body that gives its connection back to the pool once read to the end.
pub(super) struct PooledBody {
    body: Incoming,
    /// The connection and where it goes back; `None` once given back or broken.
    connection: Option<(Arc<Pools>, SocketAddr, Sender)>,
    ended: bool,
}

impl PooledBody {
    /// `body`, read over `sender`'s connection to `addr`, which goes back to `pools`.
    pub(super) fn new(body: Incoming, pools: Arc<Pools>, addr: SocketAddr, sender: Sender) -> Self {
        Self {
            body,
            connection: Some((pools, addr, sender)),
            ended: false,
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.connection = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end (or empty): the connection can carry another request. Otherwise
        // dropping the sender closes it, the rest of this response unread.
        if self.is_end_stream()
            && let Some((pools, addr, sender)) = self.connection.take()
        {
            pools.checkin(addr, sender);
        }
    }
}
