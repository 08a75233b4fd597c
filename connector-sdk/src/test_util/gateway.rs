//! A `tributary gateway` (or `up`) process for tests, and deployments to put on it.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
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
    /// A typed client for the gateway's API.
    pub client: GatewayClient,
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
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .args(&options.args)
            .envs(options.env.iter().cloned())
            .current_dir(dir.path());
        let (child, log) = spawn_logged(&mut cmd, dir.path(), "gateway");
        let mut gw = Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            client: GatewayClient::new(
                &format!("http://127.0.0.1:{port}"),
                Auth::None,
                Duration::from_secs(60),
            )
            .expect("gateway client"),
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
        gw
    }

    /// A URL on this gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
