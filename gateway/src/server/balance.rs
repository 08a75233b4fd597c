//! One acceptor hands each new connection to the worker serving the fewest. When every worker
//! polled the listening socket itself, a burst of new connections (a connector or a load
//! generator opening its pool) went mostly to whichever worker woke first, and for as long as
//! those keep-alive connections lived one worker carried most of the load while the other idled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A connection handed to a worker, with what it holds while open.
pub(super) struct Accepted {
    /// The connection (non-blocking), to be registered with the worker's runtime.
    pub(super) stream: std::net::TcpStream,
    /// Its place under `max_connections`.
    pub(super) permit: OwnedSemaphorePermit,
    /// Its count in the worker's load.
    pub(super) open: Open,
}

/// Connections open per worker.
#[derive(Clone)]
pub(super) struct Loads(Arc<[AtomicUsize]>);

/// One open connection of a worker, counted until dropped.
pub(super) struct Open {
    loads: Loads,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.loads.0[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Loads {
    /// No connection open on any of `workers` workers.
    pub(super) fn new(workers: usize) -> Self {
        Self((0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect())
    }

    /// The worker with the fewest open connections (ties go to the first from `from` on, so
    /// equal workers take turns), counted one more until the returned guard is dropped.
    pub(super) fn least(&self, from: usize) -> Open {
        let n = self.0.len();
        let worker = (0..n)
            .map(|k| (from + k) % n)
            .min_by_key(|&i| self.0[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.0[worker].fetch_add(1, Ordering::Relaxed);
        Open {
            loads: self.clone(),
            worker,
        }
    }
}

/// Accepts connections until `cancel` fires (waiting while `max_connections` are open) and hands
/// each to the least loaded of `workers`; an error once a worker has stopped taking them.
pub(super) async fn accept(
    listener: TcpListener,
    workers: Vec<UnboundedSender<Accepted>>,
    max_connections: usize,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let loads = Loads::new(workers.len());
    let mut at_limit = false;
    for turn in 0.. {
        if permits.available_permits() == 0 && !at_limit {
            at_limit = true;
            tracing::warn!(
                max_connections,
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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted.and_then(|(s, _)| s.into_std()) {
                Ok(stream) => stream,
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
        let open = loads.least(turn % workers.len().max(1));
        let worker = open.worker;
        let accepted = Accepted {
            stream,
            permit,
            open,
        };
        if workers[worker].send(accepted).is_err() {
            return Err(std::io::Error::other(format!(
                "HTTP worker {worker} stopped taking connections"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_goes_to_the_worker_with_the_fewest_open() {
        let loads = Loads::new(2);
        let a = loads.least(0);
        let b = loads.least(0);
        assert_eq!((a.worker, b.worker), (0, 1), "one each");
        let c = loads.least(1);
        assert_eq!(c.worker, 1, "a tie goes to the first from the turn on");
        let d = loads.least(1);
        assert_eq!(d.worker, 0, "worker 1 has two open");
        drop((a, d));
        let e = loads.least(1);
        assert_eq!(e.worker, 0, "worker 0's closed: it has none open");
    }

    #[tokio::test]
    async fn a_worker_that_stopped_taking_connections_stops_the_acceptor_with_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listens");
        let addr = listener.local_addr().expect("address");
        let (hand, connections) = tokio::sync::mpsc::unbounded_channel();
        drop(connections);
        let acceptor = tokio::spawn(accept(
            listener,
            vec![hand],
            4,
            Arc::new(Semaphore::new(4)),
            CancellationToken::new(),
        ));
        let _client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let ended = tokio::time::timeout(Duration::from_secs(5), acceptor)
            .await
            .expect("the acceptor ends")
            .expect("no panic");
        let error = ended.expect_err("an error");
        assert!(
            error
                .to_string()
                .contains("worker 0 stopped taking connections"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_acceptor_stops_when_cancelled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listens");
        let (hand, _connections) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let acceptor = tokio::spawn(accept(
            listener,
            vec![hand],
            4,
            Arc::new(Semaphore::new(4)),
            cancel.clone(),
        ));
        cancel.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), acceptor)
            .await
            .expect("the acceptor ends")
            .expect("no panic");
        assert!(ended.is_ok(), "{ended:?}");
    }
}
