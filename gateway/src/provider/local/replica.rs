//! `mode=http` replicas: a supervisor per replica that starts the process, waits until it
//! listens on its `PORT`, and restarts it with backoff when it dies; its output goes to the log.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use axum::body::Body;
use http::{Request, Response};

use super::function::{Function, Mode, Replica};
use super::logs;
use super::{Inner, LocalProvider};
use crate::error::GatewayError;
use crate::provider::process::{isolate, signal_group, terminate};

/// How many stderr lines of a replica are kept to explain why it failed.
const STDERR_TAIL: usize = 8;
/// The longest wait between restarts of a crashing replica.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// A replica that ran this long before dying restarts without delay growth.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

impl LocalProvider {
    /// Starts or stops replica supervisors until `desired` run.
    pub(super) async fn reconcile(&self, function: &Arc<Function>) {
        if function.mode != Mode::Http {
            return;
        }
        let mut set = function.replicas.lock().await;
        let desired =
            usize::try_from(function.desired.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        while set.running.len() < desired && !function.cancel.is_cancelled() {
            let id = self.inner.next_replica.fetch_add(1, Ordering::Relaxed);
            let cancel = function.cancel.child_token();
            let supervisor = supervise(self.inner.clone(), function.clone(), id, cancel.clone());
            let task = match &self.inner.runtime {
                Some(runtime) => runtime.spawn(supervisor),
                None => tokio::spawn(supervisor),
            };
            set.running.push(Replica { id, cancel, task });
        }
        let mut stopping = Vec::new();
        while set.running.len() > desired {
            if let Some(r) = set.running.pop() {
                r.cancel.cancel();
                stopping.push(r);
            }
        }
        drop(set);
        for r in stopping {
            let _ = r.task.await;
            function.set_ready(r.id, None);
        }
    }

    /// How long a deploy waits for its replicas: a little over `startup_timeout`, so a replica's
    /// own, more precise failure is what gets reported.
    pub(super) fn deploy_wait(&self) -> Duration {
        self.inner.config.startup_timeout + Duration::from_secs(1)
    }

    /// Waits until `function` has `want` ready replicas, or reports why it did not get them.
    pub(super) async fn wait_ready(
        &self,
        function: &Function,
        want: usize,
        limit: Duration,
    ) -> Result<(), GatewayError> {
        if function.mode == Mode::Fork {
            return match &function.fork_error {
                Some(reason) => Err(GatewayError::StartFailed {
                    name: function.spec.service.clone(),
                    reason: reason.clone(),
                }),
                None => Ok(()),
            };
        }
        let mut ready = function.ready_count.subscribe();
        let mut failures = function.failures.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if *ready.borrow_and_update() >= want {
                return Ok(());
            }
            // Functions are fresh here, so any failure at all is a failure to start.
            if *failures.borrow_and_update() > 0 {
                return Err(GatewayError::StartFailed {
                    name: function.spec.service.clone(),
                    reason: function.last_error(),
                });
            }
            tokio::select! {
                _ = ready.changed() => {}
                _ = failures.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(GatewayError::StartFailed {
                        name: function.spec.service.clone(),
                        reason: format!("not ready after {:.1}s (startup_timeout): {}", limit.as_secs_f64(), function.last_error()),
                    });
                }
                _ = function.cancel.cancelled() => {
                    return Err(GatewayError::FunctionNotFound {
                        name: function.spec.service.clone(),
                        namespace: function.spec.namespace_or_default().to_owned(),
                    });
                }
            }
        }
    }

    pub(super) async fn stop(&self, function: &Function) {
        function.cancel.cancel();
        let mut set = function.replicas.lock().await;
        for r in set.running.drain(..) {
            let _ = r.task.await;
            function.set_ready(r.id, None);
        }
    }

    pub(super) async fn invoke_http(
        &self,
        function: &Arc<Function>,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let addr = match function.pick() {
            Some(addr) => addr,
            None => {
                if function.desired.load(Ordering::Relaxed) == 0 {
                    tracing::info!(function = %function.label, "scaling from zero to 1 replica");
                    function.desired.store(1, Ordering::Relaxed);
                    self.reconcile(function).await;
                }
                let limit = self.inner.upstream_timeout;
                let started = Instant::now();
                let mut ready = function.ready_count.subscribe();
                let waited = tokio::time::timeout(limit, ready.wait_for(|n| *n > 0)).await;
                match (waited, function.pick()) {
                    (Ok(Ok(_)), Some(addr)) => addr,
                    _ => {
                        return Err(GatewayError::NoReplicas {
                            name: function.spec.service.clone(),
                            waited_secs: started.elapsed().as_secs_f64(),
                        });
                    }
                }
            }
        };
        self.inner
            .proxy
            .forward(&function.spec.service, addr, request)
            .await
    }
}

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()
        .map(|a| a.port())
}

/// Keeps one `mode=http` replica running until cancelled: start, wait until it accepts
/// connections, serve, and restart with exponential backoff when it dies.
pub(super) async fn supervise(
    inner: Arc<Inner>,
    function: Arc<Function>,
    id: u64,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let started = Instant::now();
        match run_replica(&inner, &function, id, &cancel).await {
            ReplicaEnd::Cancelled => return,
            ReplicaEnd::Failed(reason) => function.record_failure(reason),
        }
        function.set_ready(id, None);
        if started.elapsed() > HEALTHY_RUN {
            backoff = Duration::from_millis(100);
        }
        tracing::info!(function = %function.label, replica = id, backoff_ms = backoff.as_millis() as u64, "restarting replica");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
    }
}

enum ReplicaEnd {
    Cancelled,
    Failed(String),
}

async fn run_replica(
    inner: &Inner,
    function: &Function,
    id: u64,
    cancel: &CancellationToken,
) -> ReplicaEnd {
    let config = &inner.config;
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return ReplicaEnd::Failed(format!("no free port: {e}")),
    };
    let mut cmd = inner.command(function);
    cmd.env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    isolate(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ReplicaEnd::Failed(format!("could not start {:?}: {e}", function.argv[0]));
        }
    };
    let pid = child.id().unwrap_or_default();
    let tail = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let instance: Arc<str> = Arc::from(format!("{}-{id}", function.spec.service));
    let mut stderr_done = forward_output(&mut child, function, instance, pid, tail.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + config.startup_timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::select! {
            status = child.wait() => {
                signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                // Let the reader catch the last stderr lines: they usually say why.
                let _ = tokio::time::timeout(Duration::from_millis(500), &mut stderr_done).await;
                return ReplicaEnd::Failed(format!("process exited ({}) before listening on PORT {port}{}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()), stderr_suffix(&tail)));
            }
            _ = cancel.cancelled() => {
                terminate(&mut child, config.stop_grace).await;
                return ReplicaEnd::Cancelled;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            terminate(&mut child, config.stop_grace).await;
            return ReplicaEnd::Failed(format!(
                "process did not listen on PORT {port} within startup_timeout ({:.1}s){}",
                config.startup_timeout.as_secs_f64(),
                stderr_suffix(&tail)
            ));
        }
    }
    tracing::info!(function = %function.label, replica = id, pid, %addr, "replica ready");
    function.set_ready(id, Some(addr));
    tokio::select! {
        status = child.wait() => {
            function.set_ready(id, None);
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut stderr_done).await;
            ReplicaEnd::Failed(format!("process {pid} exited ({}){}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()), stderr_suffix(&tail)))
        }
        _ = cancel.cancelled() => {
            function.set_ready(id, None);
            terminate(&mut child, config.stop_grace).await;
            tracing::info!(function = %function.label, replica = id, pid, "replica stopped");
            ReplicaEnd::Cancelled
        }
    }
}

type Tail = Arc<Mutex<std::collections::VecDeque<String>>>;

fn stderr_suffix(tail: &Tail) -> String {
    let lines = tail.lock().unwrap_or_else(|e| e.into_inner());
    if lines.is_empty() {
        String::new()
    } else {
        format!(
            "; stderr: {}",
            lines.iter().cloned().collect::<Vec<_>>().join(" | ")
        )
    }
}

/// Sends a replica's stdout and stderr lines to the function's log book (and the gateway's log),
/// keeping the last stderr lines; the handle finishes when stderr closes.
fn forward_output(
    child: &mut Child,
    function: &Function,
    instance: Arc<str>,
    pid: u32,
    tail: Tail,
) -> JoinHandle<()> {
    if let Some(out) = child.stdout.take() {
        let (label, book, instance) = (
            function.label.clone(),
            function.log.clone(),
            instance.clone(),
        );
        tokio::spawn(logs::read_lines(BufReader::new(out), move |line| {
            tracing::info!(target: "function", function = %label, pid, "{line}");
            book.line(&instance, line);
        }));
    }
    let err = child.stderr.take();
    let (label, book) = (function.label.clone(), function.log.clone());
    tokio::spawn(async move {
        let Some(err) = err else { return };
        logs::read_lines(BufReader::new(err), |line| {
            tracing::info!(target: "function", function = %label, pid, stream = "stderr", "{line}");
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line.clone());
            drop(t);
            book.line(&instance, line);
        })
        .await;
    })
}
