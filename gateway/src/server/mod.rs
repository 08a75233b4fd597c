//! The gateway's HTTP server, hardened against clients that do not play along: a deadline for
//! request headers, idle connections closed, a cap on open connections
//! (logged when reached), TCP_NODELAY, and a shutdown that ends within a bounded grace even when
//! clients keep connections half-sent. Connections are served by worker threads, each with its
//! own single-threaded runtime (nginx's model: no hand-offs between threads on the hot path);
//! one acceptor hands each new connection to the worker with the fewest open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

mod balance;
mod idle;

use axum::response::IntoResponse as _;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Either};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;

use balance::Accepted;
use tokio_util::sync::CancellationToken;

/// Serves function calls without the router: see [`is_hot`].
pub type HotPath = Arc<
    dyn Fn(http::Request<axum::body::Body>) -> BoxFuture<'static, axum::response::Response>
        + Send
        + Sync,
>;

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// How long a client may take to send a request's headers, and how long a connection
    /// with no request in progress stays open.
    pub read_timeout: Duration,
    /// Connections open at once; more wait until one closes.
    pub max_connections: usize,
    /// How long connections get to finish at shutdown before they are closed.
    pub shutdown_grace: Duration,
    /// Threads that serve connections, each with its own single-threaded runtime
    /// (nginx's worker model); at least one.
    pub workers: usize,
}

/// Serves `app` on `listener` until `cancel` fires, then lets open connections finish for at
/// most `shutdown_grace`; function calls go to `hot` instead.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    hot: HotPath,
    limits: ServerLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    // One cap for all workers.
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Requests other than function calls run on the calling runtime, where the providers'
    // long-lived tasks live; the workers only carry the hot path.
    let main = tokio::runtime::Handle::current();
    let stop = cancel.child_token();
    let (mut done, mut workers) = (Vec::new(), Vec::new());
    for i in 0..limits.workers.max(1) {
        let (hand, connections) = tokio::sync::mpsc::unbounded_channel();
        workers.push(hand);
        let routes = Routes {
            app: app.clone(),
            hot: hot.clone(),
            main: main.clone(),
        };
        let stop = stop.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("http-worker-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(serve_connections(connections, routes, limits, stop))
                    });
                let _ = tx.send(result);
            })?;
        done.push(rx);
    }
    // However the acceptor ends (an error, a panic), the workers stop too rather than serve
    // only the connections already open.
    let acceptor = tokio::spawn({
        let stopped = stop.clone().drop_guard();
        let accepting = balance::accept(
            listener,
            workers,
            limits.max_connections,
            permits,
            stop.clone(),
        );
        async move {
            let _stopped = stopped;
            accepting.await
        }
    });
    let mut result = Ok(());
    for rx in done {
        let failed = match rx.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::other("an HTTP worker thread panicked"),
        };
        tracing::error!(error = %failed, "an HTTP worker stopped: stopping the others");
        stop.cancel();
        result = Err(failed);
    }
    match acceptor.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if result.is_ok() => result = Err(e),
        Ok(Err(_)) => {}
        Err(e) => result = Err(std::io::Error::other(e)),
    }
    result
}

/// Whether a request is a function call: served by the hot path, on the worker that accepted it.
pub(crate) fn is_hot(path: &str) -> bool {
    ["/function/", "/async-function/"]
        .iter()
        .any(|prefix| path.len() > prefix.len() && path.starts_with(prefix))
}

/// Where requests go.
#[derive(Clone)]
struct Routes {
    app: axum::Router,
    hot: HotPath,
    /// The runtime requests other than function calls run on.
    main: Handle,
}

impl Routes {
    fn call(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Result<axum::response::Response, Infallible>> + use<> {
        if is_hot(request.uri().path()) {
            return Either::Left((self.hot)(request.map(axum::body::Body::new)).map(Ok));
        }
        let task = self
            .main
            .spawn(TowerToHyperService::new(self.app.clone()).call(request));
        Either::Right(async move {
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "request handler failed");
                Ok(http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
            })
        })
    }
}

/// Serves the connections the acceptor hands this worker, on the current runtime, until
/// `cancel` fires; then lets them finish for at most the shutdown grace.
async fn serve_connections(
    mut connections: UnboundedReceiver<Accepted>,
    routes: Routes,
    limits: ServerLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    // HTTP/1.1 only, as OpenFaaS's gateway: the header deadline then also covers a connection
    // that never sends a byte (protocol detection would wait for it unbounded).
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let Accepted {
            stream,
            permit,
            open,
        } = tokio::select! {
            accepted = connections.recv() => match accepted {
                Some(a) => a,
                None => break,
            },
            _ = cancel.cancelled() => break,
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve an accepted connection");
                continue;
            }
        };
        let activity = idle::Activity::new();
        let service = hyper::service::service_fn({
            let (activity, routes) = (activity.clone(), routes.clone());
            move |request| {
                let busy = activity.busy();
                let call = routes.call(request);
                async move {
                    let response = call.await?;
                    // The request stays in progress until its response body is sent.
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
                            let _in_progress = &busy;
                            f
                        }))
                    }))
                }
            }
        });
        let io = TokioIo::new(idle::Watched::new(stream, activity.clone()));
        let connection = graceful.watch(builder.serve_connection(io, service));
        let idle_limit = limits.read_timeout;
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                // Nothing in progress and no byte moved: close it.
                _ = activity.idle(idle_limit) => {}
            }
            drop((permit, open));
        });
    }
    drop(connections);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace: closing them");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_hot;

    #[test]
    fn only_function_calls_take_the_hot_path() {
        assert!(is_hot("/function/echo"));
        assert!(is_hot("/function/echo.dev/a/b"));
        assert!(is_hot("/async-function/echo"));
        for path in [
            "/function/",
            "/function",
            "/async-function/",
            "/system/functions",
            "/ui/",
            "/healthz",
            "/functions/x",
        ] {
            assert!(!is_hot(path), "{path}");
        }
    }
}
