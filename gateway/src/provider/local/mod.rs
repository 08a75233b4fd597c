//! The local provider, the embedded default: each function is a local process.
//!
//! `envProcess` is the command (split like a shell would, without running one). With the env
//! var `mode=http` every replica is a long-running process serving HTTP on the port given in
//! `PORT`; it counts as ready once it accepts connections, and is restarted with backoff when it
//! dies. Otherwise each request forks the command with the body on stdin and answers with its
//! stdout (a non-zero exit is a 500; stderr goes to the log, never to the caller).
//!
//! Functions get only their own environment, their own secrets ([`secrets`]) and their output
//! captured for `/system/logs` ([`logs`]), all kept in the state directory.

mod build;
mod config;
mod fork;
mod function;
mod logs;
mod replica;
mod secrets;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use chrono::Utc;
use http::{Request, Response};
use tokio_util::sync::CancellationToken;

pub use self::config::LocalConfig;
use self::function::{Function, Mode};
use self::logs::LogBook;
use self::secrets::SecretStore;
use super::{LogQuery, LogStream, Provider};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::model::{FunctionDeployment, FunctionStatus, ProviderInfo, SCALE_MIN_LABEL, Secret};
use crate::proxy::HttpProxy;
use crate::state::StateDir;

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
    state: StateDir,
    secrets: SecretStore,
    /// (namespace, name) → captured output; outlives updates of the function.
    logs: Mutex<HashMap<(String, String), Arc<LogBook>>>,
    /// The runtime the provider was made on: replica supervisors run there, whichever HTTP
    /// worker's request started them (a worker's runtime ends with the server).
    runtime: Option<tokio::runtime::Handle>,
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
        let (namespace, name) = function.key();
        cmd.env(
            "secret_mount_path",
            self.secrets.mount_path(&namespace, &name),
        );
        cmd.envs(&function.spec.env_vars);
        cmd
    }
}

impl LocalProvider {
    /// A provider with no functions, invoking within `gateway`'s `upstream_timeout` and
    /// `max_body_size`, keeping secrets and output in `state`; `cancel` stops every process
    /// when cancelled.
    pub fn new(
        config: LocalConfig,
        gateway: &GatewayConfig,
        state: StateDir,
        cancel: CancellationToken,
    ) -> Self {
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
        namespaces.insert(gateway.function_namespace.clone());
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
                secrets: SecretStore::new(state.clone()),
                state,
                logs: Mutex::default(),
                runtime: tokio::runtime::Handle::try_current().ok(),
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
}

#[async_trait]
impl Provider for LocalProvider {
    fn info(&self) -> ProviderInfo {
        super::provider_info("tributary-local", "process")
    }

    fn has_function(&self, name: &str, namespace: &str) -> bool {
        self.lookup(name, namespace).is_some()
    }

    async fn deploy(&self, deployment: FunctionDeployment) -> Result<(), GatewayError> {
        let (namespace, name) = (deployment.namespace_or_default(), &deployment.service);
        if self.has_function(name, namespace) {
            return Err(GatewayError::AlreadyExists {
                name: name.clone(),
                namespace: namespace.to_owned(),
            });
        }
        self.install_secrets(&deployment).await?;
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
        self.install_secrets(&deployment).await?;
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
        self.inner
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&function.key());
        let (namespace, name) = function.key();
        self.with_secrets(move |s| s.forget_function(&namespace, &name))
            .await?;
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

    async fn secrets(&self, namespace: &str) -> Result<Vec<Secret>, GatewayError> {
        let namespace = namespace.to_owned();
        self.with_secrets(move |s| s.list(&namespace)).await
    }

    async fn create_secret(&self, secret: Secret) -> Result<(), GatewayError> {
        self.with_secrets(move |s| s.write(&secret, true)).await
    }

    async fn update_secret(&self, secret: Secret) -> Result<(), GatewayError> {
        let namespace = secret.namespace.clone().unwrap_or_default();
        let name = secret.name.clone();
        self.with_secrets(move |s| s.write(&secret, false)).await?;
        // Functions that use it see the new value, as Kubernetes updates mounted secrets.
        let users: Vec<FunctionDeployment> = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&namespace)
            .map(|fns| {
                fns.values()
                    .filter(|f| f.spec.secrets.contains(&name))
                    .map(|f| f.spec.clone())
                    .collect()
            })
            .unwrap_or_default();
        for spec in users {
            if let Err(e) = self.install_secrets(&spec).await {
                tracing::warn!(function = %spec.service, error = %tributary_core::Chain(&e), "cannot refresh a function's secrets");
            }
        }
        Ok(())
    }

    async fn delete_secret(&self, name: &str, namespace: &str) -> Result<(), GatewayError> {
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        self.with_secrets(move |s| s.delete(&name, &namespace))
            .await
    }

    async fn logs(&self, query: LogQuery) -> Result<LogStream, GatewayError> {
        let function = self.get(&query.name, &query.namespace)?;
        let lines = function.log.query(query).await?;
        // A follower must not hold the gateway's shutdown up to its grace period.
        let stop = self.inner.cancel.clone().cancelled_owned();
        Ok(futures::StreamExt::boxed(futures::StreamExt::take_until(
            lines, stop,
        )))
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
    use crate::model::DEFAULT_NAMESPACE;

    use http::StatusCode;

    fn provider() -> (LocalProvider, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(Some(tmp.path())).expect("state");
        let provider = LocalProvider::new(
            LocalConfig {
                startup_timeout: Duration::from_secs(5),
                stop_grace: Duration::from_secs(1),
                ..LocalConfig::default()
            },
            &GatewayConfig::default(),
            state,
            CancellationToken::new(),
        );
        (provider, tmp)
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
        let (p, _state) = provider();
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
        let (p, _state) = provider();
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
        let (p, _state) = provider();
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
