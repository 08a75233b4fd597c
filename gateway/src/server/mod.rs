//! The gateway's HTTP server, hardened against clients that do not play along: a deadline for
//! request headers, idle connections closed, a cap on open connections
//! (logged when reached), TCP_NODELAY, and a shutdown that ends within a bounded grace even when
//! clients keep connections half-sent.

use std::sync::Arc;
use std::time::Duration;

mod idle;

use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
}

/// Serves `app` on `listener` until `cancel` fires, then lets open connections finish for at
/// most `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
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
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut at_limit = false;
    loop {
        if permits.available_permits() == 0 && !at_limit {
            at_limit = true;
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait until open ones close (idle ones close after read_timeout)"
            );
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = cancel.cancelled() => break,
        };
        if at_limit && permits.available_permits() > 0 {
            at_limit = false;
            tracing::info!("below the connection limit again");
        }
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the like: do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = idle::Activity::new();
        let tower = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn({
            let activity = activity.clone();
            move |request| {
                let busy = activity.busy();
                let call = tower.call(request);
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
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace: closing them");
        }
    }
    Ok(())
}
