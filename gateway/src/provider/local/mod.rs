//! The local provider, the embedded default: each function is a local process.
//!
//! `envProcess` is the command (split like a shell would, without running one). With the env
//! var `mode=http` every replica is a long-running process serving HTTP on the port given in
//! `PORT`; it counts as ready once it accepts connections, and is restarted with backoff when it
//! dies. Otherwise each request forks the command with the body on stdin and answers with its
//! stdout (a non-zero exit is a 500; stderr goes to the log, never to the caller).

mod fork;
mod function;
mod replica;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use chrono::{DateTime, Utc};
use http::{Request, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tributary_core::units::parse_positive_duration;

use self::function::{Function, Mode};
use super::Provider;
use super::process::check_program;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::model::{
    DEFAULT_NAMESPACE, FunctionDeployment, FunctionStatus, ProviderInfo, SCALE_MIN_LABEL,
    VersionInfo,
};
use crate::proxy::HttpProxy;

/// Settings of the local provider.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LocalConfig {
    /// How long a `mode=http` function may take to start listening.
    #[arg(long, env = "startup_timeout", default_value = "10s", value_parser = parse_positive_duration)]
    pub startup_timeout: Duration,
    /// Working directory of function processes; relative commands resolve against it (for
    /// `up`, the stack file's folder by default; otherwise the current folder).
    #[arg(long, env = "work_dir")]
    pub work_dir: Option<PathBuf>,
    /// Requests a fork-mode function runs at once, unless its own `max_inflight` env var says
    /// otherwise (0: no limit); beyond it: 429, as the OpenFaaS watchdog answers.
    #[arg(long, env = "fork_max_inflight", default_value = "64", value_parser = tributary_core::units::parse_count)]
    pub fork_max_inflight: usize,
    /// How long a process gets between SIGTERM and SIGKILL.
    #[arg(skip = Duration::from_secs(5))]
    pub stop_grace: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

/// Runs functions as local processes.
#[derive(Clone)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalConfig,
    /// Working directory of function processes.
    work_dir: PathBuf,
    /// How long an invocation may take (`upstream_timeout`).
    upstream_timeout: Duration,
    /// Largest request body, in bytes (`max_body_size`).
    max_body_size: usize,
    /// `PATH` of function processes: the gateway binary's own folder first, so `tributary echo`
    /// works as a function command.
    path_var: OsString,
    /// Namespace → name → function; nested so lookups borrow instead of allocating keys.
    functions: RwLock<HashMap<String, HashMap<String, Arc<Function>>>>,
    namespaces: RwLock<BTreeSet<String>>,
    proxy: HttpProxy,
    cancel: CancellationToken,
    next_replica: AtomicU64,
}

/// Variables of the gateway's own environment a function process inherits; nothing else is.
const INHERITED_ENV: [&str; 4] = ["HOME", "LANG", "LC_ALL", "TZ"];

impl Inner {
    /// The command of `function` in its folder with only its own environment: `PATH` (the
    /// gateway's folder first), the locale and time-zone variables, `fprocess`, then its
    /// `envVars`. Never the gateway's settings or credentials.
    fn command(&self, function: &Function) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&function.argv[0]);
        cmd.args(&function.argv[1..])
            .current_dir(&self.work_dir)
            .env_clear()
            .env("PATH", &self.path_var);
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        if let Some(fprocess) = &function.spec.env_process {
            cmd.env("fprocess", fprocess);
        }
        cmd.envs(&function.spec.env_vars);
        cmd
    }
}

impl LocalProvider {
    /// A provider with no functions, invoking within `gateway`'s `upstream_timeout` and
    /// `max_body_size`; `cancel` stops every process when cancelled.
    pub fn new(config: LocalConfig, gateway: &GatewayConfig, cancel: CancellationToken) -> Self {
        let mut path_var = std::env::var_os("PATH").unwrap_or_default();
        let own_folder = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from));
        if let Some(extra) = own_folder {
            let mut parts = vec![extra];
            parts.extend(std::env::split_paths(&path_var));
            if let Ok(joined) = std::env::join_paths(parts) {
                path_var = joined;
            }
        }
        let proxy = HttpProxy::new(gateway.upstream_timeout, gateway.max_body_size);
        let mut namespaces = BTreeSet::new();
        namespaces.insert(DEFAULT_NAMESPACE.to_owned());
        Self {
            inner: Arc::new(Inner {
                work_dir: config
                    .work_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".")),
                config,
                upstream_timeout: gateway.upstream_timeout,
                max_body_size: gateway.max_body_size,
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
        let mode = match spec.env_vars.get("mode").map(|m| m.trim()) {
            Some("http") => Mode::Http,
            None | Some("" | "fork") => Mode::Fork,
            Some(other) => {
                return Err(GatewayError::BadRequest(format!(
                    "field `envVars.mode` must be `http` (a server on $PORT) or unset (the command runs per request), not {other:?}"
                )));
            }
        };
        let slots = match spec
            .env_vars
            .get("max_inflight")
            .map(|m| m.trim().parse::<usize>())
        {
            None => Some(self.inner.config.fork_max_inflight),
            Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(GatewayError::BadRequest(
                    "field `envVars.max_inflight` must be a whole number (0: no limit)".into(),
                ));
            }
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
            Mode::Fork => check_program(&argv[0], &self.inner.path_var, &self.inner.work_dir).err(),
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
            slots: slots.map(|n| (Arc::new(tokio::sync::Semaphore::new(n)), n)),
            next: AtomicUsize::new(0),
        }))
    }
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
            Mode::Fork => fork::invoke(&self.inner, &function, request).await,
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

    use http::StatusCode;

    fn provider() -> LocalProvider {
        LocalProvider::new(
            LocalConfig {
                startup_timeout: Duration::from_secs(5),
                stop_grace: Duration::from_secs(1),
                ..LocalConfig::default()
            },
            &GatewayConfig::default(),
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
