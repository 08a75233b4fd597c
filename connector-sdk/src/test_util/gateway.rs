//! A `tributary gateway` (or `up`) process for tests, and deployments to put on it.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_core::auth::BasicAuth;
use tributary_core::client::{Auth, GatewayClient};

use super::{eventually, free_port, signal, spawn_logged, tributary_bin, wait_exit};

/// How to start a gateway process.
#[derive(Debug, Default, Clone)]
pub struct GatewayOptions {
    /// Extra CLI arguments after `gateway` (or `up`).
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run `tributary up -f FILE` instead of `tributary gateway`.
    pub stack_file: Option<PathBuf>,
    /// Listen on this port instead of a free one (to restart a gateway in place).
    pub port: Option<u16>,
    /// Keep state here instead of a fresh folder (to restart a gateway with its credentials).
    pub state_dir: Option<PathBuf>,
}

impl GatewayOptions {
    /// Adds CLI arguments.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Adds environment variables.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Runs `up -f file`.
    pub fn stack(mut self, file: impl Into<PathBuf>) -> Self {
        self.stack_file = Some(file.into());
        self
    }

    /// Listens on `port`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Keeps the gateway's state (generated credentials, queue) in `dir`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
}

/// A `tributary gateway` (or `up`) process on a free port, killed on drop.
pub struct GatewayProcess {
    child: Child,
    /// Its port.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// A typed client for the gateway's API (with the generated credentials, if any).
    pub client: GatewayClient,
    /// The gateway's state directory.
    pub state_dir: PathBuf,
    credentials: Option<BasicAuth>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts a gateway with default options.
    pub async fn start() -> Self {
        Self::start_with(GatewayOptions::default()).await
    }

    /// Starts a gateway and waits until `/healthz` answers.
    pub async fn start_with(options: GatewayOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = options.port.unwrap_or_else(free_port);
        let mut cmd = Command::new(tributary_bin());
        match &options.stack_file {
            Some(f) => cmd.arg("up").arg("-f").arg(f),
            None => cmd.arg("gateway"),
        };
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&options.args)
            .envs(options.env.iter().cloned())
            .current_dir(dir.path());
        let (child, log) = spawn_logged(&mut cmd, dir.path(), "gateway");
        let base = format!("http://127.0.0.1:{port}");
        let mut gw = Self {
            child,
            port,
            http: clients(&base, None).0,
            client: clients(&base, None).1,
            base,
            state_dir,
            credentials: None,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = gw.http.get(gw.url("/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!(
                    "gateway exited with {status} before serving:\n{}",
                    gw.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not become healthy:\n{}",
                gw.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Generated credentials (basic auth is on by default) are written before the gateway
        // answers: the helpers send them, so tests talk to a secure gateway as users do.
        let generated = gw.state_dir.join("credentials");
        if let Ok(password) = std::fs::read_to_string(generated.join("basic-auth-password")) {
            let auth = BasicAuth::new("admin", password.trim());
            (gw.http, gw.client) = clients(&gw.base, Some(&auth));
            gw.credentials = Some(auth);
        }
        gw
    }

    /// The generated credentials, when the gateway generated them.
    pub fn credentials(&self) -> Option<&BasicAuth> {
        self.credentials.as_ref()
    }

    /// Settings a connector process needs to read this gateway's `/system` routes.
    pub fn auth_env(&self) -> Vec<(String, String)> {
        match &self.credentials {
            Some(_) => vec![
                ("basic_auth".into(), "true".into()),
                (
                    "secret_mount_path".into(),
                    self.state_dir.join("credentials").display().to_string(),
                ),
            ],
            None => Vec::new(),
        }
    }

    /// A connector configuration for this gateway (see [`super::test_config`]), with its
    /// generated credentials.
    pub fn connector_config(&self) -> crate::ControllerConfigBuilder {
        let config = super::test_config(&self.base);
        match &self.credentials {
            Some(_) => config
                .basic_auth(true)
                .secret_mount_path(self.state_dir.join("credentials")),
            None => config,
        }
    }

    /// A URL on this gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` until the gateway has logged `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) {
        eventually(limit, needle, || async { self.logs().contains(needle) }).await;
    }

    /// Everything the gateway logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        self.wait(limit)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let logs = self.log.clone();
        wait_exit(&mut self.child, limit, "gateway", &logs)
    }

    /// `GET path` as JSON (panics unless 200).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("JSON body")
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        r.text().await.expect("metrics text")
    }

    /// `GET path`, returning the status code.
    pub async fn get_code(&self, path: &str) -> u16 {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request")
            .status()
            .as_u16()
    }

    /// `GET path`, returning the status code and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("read the body"))
    }

    /// `POST /system/functions` with a JSON deployment.
    pub async fn deploy(&self, deployment: Value) -> reqwest::Response {
        self.http
            .post(self.url("/system/functions"))
            .json(&deployment)
            .send()
            .await
            .expect("deploy request")
    }

    /// Deploys and asserts 202.
    pub async fn deploy_ok(&self, deployment: Value) {
        let r = self.deploy(deployment.clone()).await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(
            status,
            202,
            "deploy {deployment} failed: {body}\n{}",
            self.logs()
        );
    }

    /// `GET /system/function/NAME` as JSON (panics unless 200).
    pub async fn status(&self, name: &str) -> Value {
        self.get_json(&format!("/system/function/{name}")).await
    }

    /// Waits until `availableReplicas` of `name` equals `n`.
    pub async fn wait_available(&self, name: &str, n: u64) {
        eventually(
            Duration::from_secs(20),
            &format!("{name} to have {n} available replicas"),
            || async {
                self.client
                    .function(name, None)
                    .await
                    .is_ok_and(|f| f.available_replicas == n)
            },
        )
        .await;
    }

    /// `POST /system/scale-function/NAME`.
    pub async fn scale(&self, name: &str, replicas: u64) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/system/scale-function/{name}")))
            .json(&serde_json::json!({ "serviceName": name, "replicas": replicas }))
            .send()
            .await
            .expect("scale request")
    }

    /// Removes a function (`DELETE /system/functions`) and returns the response.
    pub async fn remove(&self, name: &str) -> reqwest::Response {
        self.http
            .delete(self.url("/system/functions"))
            .json(&serde_json::json!({ "functionName": name }))
            .send()
            .await
            .expect("remove request")
    }

    /// Invokes a function with a body and returns the response.
    pub async fn invoke(&self, name: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/function/{name}")))
            .body(body)
            .send()
            .await
            .expect("invoke request")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A deployment of the built-in echo function as a `mode=http` function.
pub fn echo_function(name: &str) -> Value {
    serde_json::json!({
        "service": name,
        "image": "tributary/echo:test",
        "envProcess": "tributary echo",
        "envVars": { "mode": "http" },
    })
}

/// A fork-per-request deployment running `command`.
pub fn fork_function(name: &str, command: &str) -> Value {
    serde_json::json!({
        "service": name,
        "image": "tributary/fork:test",
        "envProcess": command,
    })
}

/// An HTTP client that sends `auth` with every request, and a typed client with it.
fn clients(base: &str, auth: Option<&BasicAuth>) -> (reqwest::Client, GatewayClient) {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(auth) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.user, auth.password));
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {token}").parse().expect("a header value"),
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .expect("client");
    let client = GatewayClient::new(
        base,
        auth.map_or(Auth::None, |a| Auth::Basic(a.clone())),
        Duration::from_secs(60),
    )
    .expect("gateway client");
    (http, client)
}
