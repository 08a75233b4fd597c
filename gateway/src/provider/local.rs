//! The local provider, the embedded default: each function is a local process.
//!
//! `envProcess` is the command (split like a shell would, without running one). With the env
//! var `mode=http` every replica is a long-running process serving HTTP on the port given in
//! `PORT`; it counts as ready once it accepts connections, and is restarted with backoff when it
//! dies. Otherwise each request forks the command with the body on stdin and answers with its
//! stdout (a non-zero exit is a 500; stderr goes to the log, never to the caller).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Provider;
use super::process::{check_program, isolate, signal_group, terminate};
use crate::error::GatewayError;
use crate::model::{
    DEFAULT_NAMESPACE, FunctionDeployment, FunctionStatus, ProviderInfo, VersionInfo,
};
use crate::proxy::{HttpProxy, is_length_limit};

/// The label OpenFaaS uses for the minimum (and initial) replica count.
const SCALE_MIN_LABEL: &str = "com.openfaas.scale.min";
/// How many stderr lines of a replica are kept to explain why it failed.
const STDERR_TAIL: usize = 8;
/// The longest wait between restarts of a crashing replica.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// A replica that ran this long before dying restarts without delay growth.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Settings of the local provider.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Working directory of function processes; relative commands resolve against it.
    pub work_dir: PathBuf,
    /// How long a `mode=http` replica may take to accept connections.
    pub startup_timeout: Duration,
    /// How long an invocation may take (`upstream_timeout`).
    pub upstream_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body_size: usize,
    /// How long a process gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// A folder put first on the functions' `PATH` (the gateway binary's own folder by default,
    /// so `tributary echo` works as a function command).
    pub extra_path: Option<PathBuf>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("."),
            startup_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(60),
            max_body_size: 32 * 1024 * 1024,
            stop_grace: Duration::from_secs(5),
            extra_path: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from)),
        }
    }
}

/// Runs functions as local processes.
#[derive(Clone)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalConfig,
    path_var: OsString,
    /// Namespace → name → function; nested so lookups borrow instead of allocating keys.
    functions: RwLock<HashMap<String, HashMap<String, Arc<Function>>>>,
    namespaces: RwLock<BTreeSet<String>>,
    proxy: HttpProxy,
    cancel: CancellationToken,
    next_replica: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http,
    Fork,
}

/// One deployed function and its replicas.
struct Function {
    spec: FunctionDeployment,
    label: String,
    argv: Vec<String>,
    mode: Mode,
    created_at: DateTime<Utc>,
    cancel: CancellationToken,
    /// Desired replicas and the supervisors running them (http mode).
    replicas: tokio::sync::Mutex<ReplicaSet>,
    desired: AtomicU64,
    /// Ready endpoints, for round-robin picking on the hot path.
    ready: RwLock<Vec<(u64, SocketAddr)>>,
    ready_count: watch::Sender<usize>,
    /// Bumped each time a replica fails to start or crashes.
    failures: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
    /// Fork mode: why the command cannot run, if it cannot.
    fork_error: Option<String>,
    next: AtomicUsize,
}

#[derive(Default)]
struct ReplicaSet {
    running: Vec<Replica>,
}

struct Replica {
    id: u64,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Function {
    fn key(&self) -> (String, String) {
        (
            self.spec.namespace_or_default().to_owned(),
            self.spec.service.clone(),
        )
    }

    fn available(&self) -> u64 {
        match self.mode {
            Mode::Http => *self.ready_count.borrow() as u64,
            Mode::Fork if self.fork_error.is_none() => self.desired.load(Ordering::Relaxed),
            Mode::Fork => 0,
        }
    }

    fn set_ready(&self, id: u64, addr: Option<SocketAddr>) {
        let mut ready = self.ready.write().unwrap_or_else(|e| e.into_inner());
        ready.retain(|(rid, _)| *rid != id);
        if let Some(addr) = addr {
            ready.push((id, addr));
        }
        let n = ready.len();
        drop(ready);
        self.ready_count.send_replace(n);
    }

    fn record_failure(&self, reason: String) {
        tracing::warn!(function = %self.label, %reason, "function replica failed");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.failures.send_modify(|n| *n += 1);
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "no replica became ready".to_owned())
    }

    fn pick(&self) -> Option<SocketAddr> {
        let ready = self.ready.read().unwrap_or_else(|e| e.into_inner());
        if ready.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        Some(ready[i].1)
    }

    fn status(&self) -> FunctionStatus {
        let mut s = FunctionStatus::from_deployment(&self.spec, self.created_at);
        s.replicas = self.desired.load(Ordering::Relaxed);
        s.available_replicas = self.available();
        s
    }
}

impl LocalProvider {
    /// A provider with no functions; `cancel` stops every process when cancelled.
    pub fn new(config: LocalConfig, cancel: CancellationToken) -> Self {
        let mut path_var = std::env::var_os("PATH").unwrap_or_default();
        if let Some(extra) = &config.extra_path {
            let mut parts = vec![extra.clone()];
            parts.extend(std::env::split_paths(&path_var));
            if let Ok(joined) = std::env::join_paths(parts) {
                path_var = joined;
            }
        }
        let proxy = HttpProxy::new(config.upstream_timeout, config.max_body_size);
        let mut namespaces = BTreeSet::new();
        namespaces.insert(DEFAULT_NAMESPACE.to_owned());
        Self {
            inner: Arc::new(Inner {
                config,
                path_var,
                functions: RwLock::default(),
                namespaces: RwLock::new(namespaces),
                proxy,
                cancel,
                next_replica: AtomicU64::new(1),
            }),
        }
    }

    fn lookup(&self, name: &str, namespace: &str) -> Option<Arc<Function>> {
        self.inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .and_then(|fns| fns.get(name))
            .cloned()
    }

    fn get(&self, name: &str, namespace: &str) -> Result<Arc<Function>, GatewayError> {
        self.lookup(name, namespace)
            .ok_or_else(|| GatewayError::FunctionNotFound {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            })
    }

    /// Builds a function from its deployment without starting anything.
    fn build(
        &self,
        mut spec: FunctionDeployment,
        created_at: DateTime<Utc>,
    ) -> Result<Arc<Function>, GatewayError> {
        let namespace = spec.namespace_or_default().to_owned();
        spec.namespace = Some(namespace.clone());
        let command = spec.env_process.clone().unwrap_or_default();
        let argv = shell_words::split(&command).map_err(|e| {
            GatewayError::BadRequest(format!("envProcess {command:?} cannot be parsed: {e}"))
        })?;
        if argv.is_empty() {
            return Err(GatewayError::BadRequest(format!(
                "function {:?}: envProcess is required by the local provider (the command to run)",
                spec.service
            )));
        }
        let mode = match spec.env_vars.get("mode").map(String::as_str) {
            Some("http") => Mode::Http,
            _ => Mode::Fork,
        };
        let desired = match spec.label(SCALE_MIN_LABEL) {
            Some(v) => v.parse::<u64>().map_err(|_| {
                GatewayError::BadRequest(format!(
                    "label {SCALE_MIN_LABEL}={v:?} must be a whole number"
                ))
            })?,
            None => 1,
        };
        let fork_error = match mode {
            Mode::Fork => {
                check_program(&argv[0], &self.inner.path_var, &self.inner.config.work_dir).err()
            }
            Mode::Http => None,
        };
        Ok(Arc::new(Function {
            label: format!("{}.{namespace}", spec.service),
            spec,
            argv,
            mode,
            created_at,
            cancel: self.inner.cancel.child_token(),
            replicas: tokio::sync::Mutex::default(),
            desired: AtomicU64::new(desired),
            ready: RwLock::default(),
            ready_count: watch::channel(0).0,
            failures: watch::channel(0).0,
            last_error: Mutex::new(fork_error.clone()),
            fork_error,
            next: AtomicUsize::new(0),
        }))
    }

    /// Starts or stops replica supervisors until `desired` run.
    async fn reconcile(&self, function: &Arc<Function>) {
        if function.mode != Mode::Http {
            return;
        }
        let mut set = function.replicas.lock().await;
        let desired =
            usize::try_from(function.desired.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        while set.running.len() < desired && !function.cancel.is_cancelled() {
            let id = self.inner.next_replica.fetch_add(1, Ordering::Relaxed);
            let cancel = function.cancel.child_token();
            let task = tokio::spawn(supervise(
                self.inner.clone(),
                function.clone(),
                id,
                cancel.clone(),
            ));
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
    fn deploy_wait(&self) -> Duration {
        self.inner.config.startup_timeout + Duration::from_secs(1)
    }

    /// Waits until `function` has `want` ready replicas, or reports why it did not get them.
    async fn wait_ready(
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

    async fn stop(&self, function: &Function) {
        function.cancel.cancel();
        let mut set = function.replicas.lock().await;
        for r in set.running.drain(..) {
            let _ = r.task.await;
            function.set_ready(r.id, None);
        }
    }

    async fn invoke_http(
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
                let limit = self.inner.config.upstream_timeout;
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

    async fn invoke_fork(
        &self,
        function: &Arc<Function>,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let config = &self.inner.config;
        let name = function.spec.service.clone();
        let (parts, body) = request.into_parts();
        let mut cmd = Command::new(&function.argv[0]);
        cmd.args(&function.argv[1..])
            .current_dir(&config.work_dir)
            .env("PATH", &self.inner.path_var)
            .envs(&function.spec.env_vars)
            .env("Http_Method", parts.method.as_str())
            .env("Http_Path", parts.uri.path())
            .env("Http_Query", parts.uri.query().unwrap_or(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &parts.headers {
            if let Ok(v) = v.to_str() {
                cmd.env(header_env_name(k.as_str()), v);
            }
        }
        isolate(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| GatewayError::Upstream {
            name: name.clone(),
            reason: format!("could not start {:?}: {e}", function.argv[0]),
        })?;
        let pid = child.id();
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(GatewayError::Internal(
                "child pipes were not created".into(),
            ));
        };
        let feed = async move {
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if stdin.write_all(&chunk).await.is_err() {
                    // The function stopped reading its input; what it wrote still counts.
                    break;
                }
            }
            drop(stdin);
            Ok::<(), axum::Error>(())
        };
        let read_out = async move {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).await.map(|_| out)
        };
        let read_err = async move {
            let mut out = Vec::new();
            let _ = stderr.read_to_end(&mut out).await;
            out
        };
        let run = async { tokio::join!(feed, read_out, read_err, child.wait()) };
        let (fed, out, err, status) = match tokio::time::timeout(config.upstream_timeout, run).await
        {
            Ok(results) => results,
            Err(_) => {
                if let Some(pid) = pid {
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
                return Err(GatewayError::UpstreamTimeout {
                    name,
                    timeout_secs: config.upstream_timeout.as_secs_f64(),
                });
            }
        };
        if let Some(pid) = pid {
            // Reap anything the command left behind in its group.
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if let Err(e) = fed {
            if is_length_limit(&e) {
                return Err(GatewayError::PayloadTooLarge {
                    limit: config.max_body_size,
                });
            }
            return Err(GatewayError::BadRequest(format!(
                "reading request body failed: {e}"
            )));
        }
        let status =
            status.map_err(|e| GatewayError::Internal(format!("waiting for {name}: {e}")))?;
        let out =
            out.map_err(|e| GatewayError::Internal(format!("reading output of {name}: {e}")))?;
        if !err.is_empty() {
            let text = String::from_utf8_lossy(&err);
            if status.success() {
                tracing::debug!(function = %function.label, stderr = %text.trim_end(), "function stderr");
            } else {
                tracing::warn!(function = %function.label, %status, stderr = %text.trim_end(), "function failed");
            }
        }
        if !status.success() {
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function {name:?} failed: {status}\n"),
            ));
        }
        let content_type = function
            .spec
            .env_vars
            .get("content_type")
            .and_then(|v| HeaderValue::from_str(v).ok())
            .or_else(|| parts.headers.get(header::CONTENT_TYPE).cloned())
            .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
        let mut response = Response::new(Body::from(Bytes::from(out)));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        Ok(response)
    }
}

/// The classic watchdog's name for a request header in the environment (`X-Foo` → `Http_X_Foo`).
fn header_env_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 5);
    out.push_str("Http_");
    let mut upper = true;
    for c in name.chars() {
        if c == '-' {
            out.push('_');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()
        .map(|a| a.port())
}

/// Keeps one `mode=http` replica running until cancelled: start, wait until it accepts
/// connections, serve, and restart with exponential backoff when it dies.
async fn supervise(inner: Arc<Inner>, function: Arc<Function>, id: u64, cancel: CancellationToken) {
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
    let mut cmd = Command::new(&function.argv[0]);
    cmd.args(&function.argv[1..])
        .current_dir(&config.work_dir)
        .env("PATH", &inner.path_var)
        .envs(&function.spec.env_vars)
        .env("PORT", port.to_string())
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
    let mut stderr_done = forward_output(&mut child, function.label.clone(), pid, tail.clone());
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

/// Sends a replica's stdout and stderr lines to the log, keeping the last stderr lines; the
/// handle finishes when stderr closes.
fn forward_output(child: &mut Child, label: String, pid: u32, tail: Tail) -> JoinHandle<()> {
    if let Some(out) = child.stdout.take() {
        let label = label.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "function", function = %label, pid, "{line}");
            }
        });
    }
    let err = child.stderr.take();
    tokio::spawn(async move {
        let Some(err) = err else { return };
        let mut lines = BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "function", function = %label, pid, stream = "stderr", "{line}");
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    })
}

#[async_trait]
impl Provider for LocalProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider: "tributary-local".into(),
            orchestration: "process".into(),
            version: VersionInfo {
                release: env!("CARGO_PKG_VERSION").into(),
                sha: String::new(),
                commit_message: None,
            },
        }
    }

    fn has_function(&self, name: &str, namespace: &str) -> bool {
        self.lookup(name, namespace).is_some()
    }

    async fn deploy(&self, deployment: FunctionDeployment) -> Result<(), GatewayError> {
        let function = self.build(deployment, Utc::now())?;
        let key = function.key();
        {
            let mut functions = self
                .inner
                .functions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let in_ns = functions.entry(key.0.clone()).or_default();
            if in_ns.contains_key(&key.1) {
                return Err(GatewayError::AlreadyExists {
                    name: key.1,
                    namespace: key.0,
                });
            }
            in_ns.insert(key.1.clone(), function.clone());
        }
        self.inner
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.0.clone());
        tracing::info!(function = %function.label, mode = ?function.mode, command = ?function.argv, "deploying function");
        self.reconcile(&function).await;
        let want = usize::try_from(function.desired.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        self.wait_ready(&function, want, self.deploy_wait()).await
    }

    async fn update(&self, deployment: FunctionDeployment) -> Result<(), GatewayError> {
        let old = self.get(&deployment.service, deployment.namespace_or_default())?;
        let function = self.build(deployment, old.created_at)?;
        if function.spec.label(SCALE_MIN_LABEL).is_none() {
            function
                .desired
                .store(old.desired.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // Start the new replicas before retiring the old ones, so calls keep being served.
        self.reconcile(&function).await;
        let want = usize::try_from(function.desired.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let ready = self.wait_ready(&function, want, self.deploy_wait()).await;
        let key = function.key();
        let replaced = self
            .inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.0)
            .or_default()
            .insert(key.1, function.clone());
        if let Some(replaced) = replaced {
            self.stop(&replaced).await;
        }
        tracing::info!(function = %function.label, "function updated");
        ready
    }

    async fn delete(&self, name: &str, namespace: &str) -> Result<(), GatewayError> {
        let removed = self
            .inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(namespace)
            .and_then(|fns| fns.remove(name));
        let Some(function) = removed else {
            return Err(GatewayError::FunctionNotFound {
                name: name.into(),
                namespace: namespace.into(),
            });
        };
        self.stop(&function).await;
        tracing::info!(function = %function.label, "function deleted");
        Ok(())
    }

    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, GatewayError> {
        let functions = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<FunctionStatus> = functions
            .get(namespace)
            .map(|fns| fns.values().map(|f| f.status()).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn status(&self, name: &str, namespace: &str) -> Result<FunctionStatus, GatewayError> {
        Ok(self.get(name, namespace)?.status())
    }

    async fn scale(&self, name: &str, namespace: &str, replicas: u64) -> Result<(), GatewayError> {
        let function = self.get(name, namespace)?;
        let before = function.desired.swap(replicas, Ordering::Relaxed);
        tracing::info!(function = %function.label, from = before, to = replicas, "scaling function");
        self.reconcile(&function).await;
        Ok(())
    }

    async fn namespaces(&self) -> Result<Vec<String>, GatewayError> {
        Ok(self
            .inner
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect())
    }

    async fn invoke(
        &self,
        name: &str,
        namespace: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let function = self.get(name, namespace)?;
        match function.mode {
            Mode::Http => self.invoke_http(&function, request).await,
            Mode::Fork => self.invoke_fork(&function, request).await,
        }
    }

    async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let all: Vec<Arc<Function>> = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|fns| fns.values().cloned())
            .collect();
        futures::future::join_all(all.iter().map(|f| self.stop(f))).await;
        tracing::info!(functions = all.len(), "all function processes stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_map_like_the_classic_watchdog() {
        assert_eq!(header_env_name("x-call-id"), "Http_X_Call_Id");
        assert_eq!(header_env_name("content-type"), "Http_Content_Type");
    }

    fn provider() -> LocalProvider {
        LocalProvider::new(
            LocalConfig {
                startup_timeout: Duration::from_secs(5),
                stop_grace: Duration::from_secs(1),
                ..LocalConfig::default()
            },
            CancellationToken::new(),
        )
    }

    fn fork(name: &str, cmd: &str) -> FunctionDeployment {
        FunctionDeployment {
            service: name.into(),
            env_process: Some(cmd.into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn fork_mode_pipes_body_through_the_command() {
        let p = provider();
        p.deploy(fork("cat", "cat")).await.expect("deploys");
        let resp = p
            .invoke("cat", DEFAULT_NAMESPACE, Request::new(Body::from("hello")))
            .await
            .expect("invokes");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn missing_command_is_reported_and_kept_with_zero_available() {
        let p = provider();
        let err = p
            .deploy(fork("ghost", "/nonexistent/binary"))
            .await
            .expect_err("fails");
        assert!(matches!(err, GatewayError::StartFailed { .. }), "{err}");
        let s = p.status("ghost", DEFAULT_NAMESPACE).await.expect("listed");
        assert_eq!(s.available_replicas, 0);
        assert!(matches!(
            p.deploy(fork("ghost", "cat")).await,
            Err(GatewayError::AlreadyExists { .. })
        ));
    }

    #[tokio::test]
    async fn empty_command_is_a_bad_request() {
        let p = provider();
        assert!(matches!(
            p.deploy(fork("x", "  ")).await,
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            p.deploy(fork("x", "'unclosed")).await,
            Err(GatewayError::BadRequest(_))
        ));
    }
}
