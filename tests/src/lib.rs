//! Helpers shared by the workspace integration tests: free ports, the `tributary` binary,
//! a gateway process with its logs, and process-liveness checks. Brokers started for tests
//! get their helpers here too, so every test starts them the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod kafka;
pub mod sqs;

/// A free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// Path of the `tributary` binary: `$TRIBUTARY_BIN`, or next to this test executable's folder
/// (`target/<profile>/tributary`), which `cargo build --bins` produces.
pub fn tributary_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRIBUTARY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("tributary");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --bins` before the tests (scripts/test does)",
        bin.display()
    );
    bin
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
        sig,
    );
}

/// Spawns `cmd` (RUST_LOG=info unless set) with stdout and stderr going to `dir/NAME.log`;
/// returns the child and the log's path.
fn spawn_logged(cmd: &mut Command, dir: &Path, name: &str) -> (Child, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
        cmd.env("RUST_LOG", "info");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    (child, log)
}

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
            || async { self.status(name).await["availableReplicas"] == n },
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

/// A `tributary connector <kind>` process, killed on drop.
pub struct ConnectorProcess {
    child: Child,
    /// Its metrics port.
    pub metrics_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ConnectorProcess {
    /// Starts `tributary connector <kind>` against `gateway_url` with extra env settings.
    pub fn start(kind: &str, gateway_url: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics_port = free_port();
        let mut cmd = Command::new(tributary_bin());
        cmd.args(["connector", kind])
            .env("gateway_url", gateway_url)
            .env("metrics_port", metrics_port.to_string())
            .envs(env.iter().copied());
        let (child, log) = spawn_logged(&mut cmd, dir.path(), "connector");
        Self {
            child,
            metrics_port,
            log,
            _dir: dir,
        }
    }

    /// Everything the connector logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` until the connector has logged `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) {
        eventually(limit, needle, || async { self.logs().contains(needle) }).await;
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The connector's metrics text (empty while it is not serving yet).
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sends SIGTERM and waits for the exit status (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let logs = self.log.clone();
        wait_exit(&mut self.child, limit, "connector", &logs)
    }
}

/// Waits up to `limit` for `child` to exit, failing with its log otherwise.
fn wait_exit(child: &mut Child, limit: Duration, what: &str, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {limit:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series in Prometheus text (0 when absent).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A `mode=http` deployment of the recording test function (tests/fixtures/recorder.py),
/// writing to `record_file`, subscribed to `topic`, with extra env (FAIL_FIRST, DELAY_MS, ...).
pub fn recorder_function(
    name: &str,
    topic: &str,
    record_file: &Path,
    env: &[(&str, &str)],
) -> Value {
    let script = workspace_root().join("tests/fixtures/recorder.py");
    let mut env_vars = serde_json::Map::new();
    env_vars.insert("mode".into(), "http".into());
    env_vars.insert(
        "RECORD_FILE".into(),
        record_file.display().to_string().into(),
    );
    for (k, v) in env {
        env_vars.insert((*k).into(), (*v).into());
    }
    serde_json::json!({
        "service": name,
        "image": "tributary/recorder:test",
        "envProcess": format!("python3 {}", script.display()),
        "envVars": env_vars,
        "annotations": { "topic": topic },
    })
}

/// The bodies a recorder function saw, in the order it served them.
pub fn record_bodies(record_file: &Path) -> Vec<String> {
    read_records(record_file)
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A request header (lower-case name) of one recorded request; empty when absent.
pub fn record_header<'a>(record: &'a Value, name: &str) -> &'a str {
    record["headers"][name].as_str().unwrap_or_default()
}

/// The kill test every at-least-once connector runs: start a connector, SIGKILL it once a
/// third of the `n` messages reached the recorder, start another, and wait until all `n`
/// distinct bodies arrived. Returns how many were recorded at the kill, how many deliveries
/// were duplicates, and the restarted connector.
pub async fn kill_mid_stream_and_restart(
    start: impl Fn() -> ConnectorProcess,
    record_file: &Path,
    n: usize,
) -> (usize, usize, ConnectorProcess) {
    let mut first = start();
    eventually(Duration::from_secs(90), "a third delivered", || async {
        read_records(record_file).len() >= n / 3
    })
    .await;
    first.kill();
    let at_kill = read_records(record_file).len();
    assert!(at_kill < n, "the kill landed after the stream ended");
    let second = start();
    eventually(
        Duration::from_secs(120),
        "every message delivered",
        || async {
            record_bodies(record_file)
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == n
        },
    )
    .await;
    // Let the restarted connector settle before duplicates are counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let duplicates = record_bodies(record_file).len() - n;
    eprintln!("killed after {at_kill} of {n}; {duplicates} duplicates");
    (at_kill, duplicates, second)
}

/// The requests a recorder function saw, in the order it served them.
pub fn read_records(record_file: &Path) -> Vec<Value> {
    std::fs::read_to_string(record_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("recorder writes JSON lines"))
        .collect()
}

/// Connector SDK helpers: an in-memory source whose acknowledgements a test can watch.
pub mod sdk {
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::mpsc;
    use tributary_connector_sdk::{
        Acknowledge, ControllerConfig, DeadLetter, DeliveryOrder, Message, Source, SourceContext,
        SourceError,
    };

    /// What the runtime did with a message.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum AckEvent {
        /// Acknowledged.
        Ack,
        /// Handed back for redelivery.
        Nack,
        /// Dead-lettered, with the reason.
        DeadLetter(DeadLetter),
    }

    /// An acknowledgement handle that reports to a channel under the message's id.
    pub struct TestAck {
        id: String,
        tx: mpsc::UnboundedSender<(String, AckEvent)>,
    }

    #[async_trait]
    impl Acknowledge for TestAck {
        async fn ack(self: Box<Self>) {
            let _ = self.tx.send((self.id.clone(), AckEvent::Ack));
        }
        async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {
            let _ = self.tx.send((self.id.clone(), AckEvent::Nack));
        }
        async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
            let _ = self
                .tx
                .send((self.id.clone(), AckEvent::DeadLetter(letter)));
        }
    }

    /// A source fed by the test through a channel.
    pub struct ChannelSource {
        rx: mpsc::Receiver<Message>,
        order: DeliveryOrder,
    }

    #[async_trait]
    impl Source for ChannelSource {
        fn name(&self) -> &str {
            "test-connector"
        }

        fn order(&self) -> DeliveryOrder {
            self.order
        }

        async fn run(mut self, ctx: SourceContext) -> Result<(), SourceError> {
            let cancel = ctx.cancelled();
            loop {
                let next = tokio::select! {
                    m = self.rx.recv() => m,
                    _ = cancel.cancelled() => return Ok(()),
                };
                match next {
                    Some(m) => ctx.send(m).await?,
                    None => return Ok(()),
                }
            }
        }
    }

    /// The test's ends: where to send messages and where acknowledgements arrive.
    pub struct Feed {
        /// Send messages here.
        pub tx: mpsc::Sender<Message>,
        /// Acknowledgements arrive here as (id, event).
        pub acks: mpsc::UnboundedReceiver<(String, AckEvent)>,
        ack_tx: mpsc::UnboundedSender<(String, AckEvent)>,
    }

    impl Feed {
        /// A message with id `id` (also its payload) for `topic`.
        pub fn message(&self, topic: &str, id: &str) -> Message {
            Message::new(
                topic,
                id.to_owned(),
                TestAck {
                    id: id.to_owned(),
                    tx: self.ack_tx.clone(),
                },
            )
        }

        /// Sends a message with id `id` for `topic`.
        pub async fn send(&self, topic: &str, id: &str) {
            self.tx
                .send(self.message(topic, id))
                .await
                .expect("source is running");
        }

        /// Waits for `n` acknowledgement events (at most `limit`).
        pub async fn events(&mut self, n: usize, limit: Duration) -> Vec<(String, AckEvent)> {
            let mut out = Vec::new();
            let deadline = tokio::time::Instant::now() + limit;
            while out.len() < n {
                match tokio::time::timeout_at(deadline, self.acks.recv()).await {
                    Ok(Some(e)) => out.push(e),
                    Ok(None) => break,
                    Err(_) => panic!(
                        "only {} of {n} acknowledgements within {limit:?}: {out:?}",
                        out.len()
                    ),
                }
            }
            out
        }
    }

    /// A channel source with the given ordering, and the test's ends of it.
    pub fn channel_source(order: DeliveryOrder) -> (ChannelSource, Feed) {
        let (tx, rx) = mpsc::channel(1024);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        (ChannelSource { rx, order }, Feed { tx, acks, ack_tx })
    }

    /// A connector configuration for tests: fast rebuilds and retries, metrics off.
    pub fn test_config(gateway_url: &str) -> tributary_connector_sdk::ControllerConfigBuilder {
        ControllerConfig::builder()
            .gateway_url(gateway_url.to_owned())
            .rebuild_interval(Duration::from_millis(300))
            .initial_retry_wait(Duration::from_millis(20))
            .max_retry_wait(Duration::from_millis(300))
            .metrics_port(0u16)
            .print_response(false)
    }
}

/// Finds a program on PATH or in the sbin folders (Debian puts nats-server in /usr/sbin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A real `nats-server -js` on a free port with its own storage folder, killed on drop.
pub struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a JetStream-enabled server and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a server with extra configuration lines (e.g. `max_payload: 8MB`).
    pub fn start_with_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, free_port(), extra)
    }

    fn start_in(dir: tempfile::TempDir, port: u16, extra: &str) -> Self {
        let bin = find_program("nats-server")
            .expect("nats-server is installed by scripts/setup (apt-get install nats-server)");
        let store = dir.path().join("js");
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{extra}\n",
                store.display()
            ),
        )
        .expect("nats config");
        let log = std::fs::File::create(dir.path().join("nats.log")).expect("log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
        }
    }

    /// The server's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a [`CallbackServer`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-case header names and values.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

/// An HTTP server on a free port that records every POST (for `X-Callback-Url`), answering
/// 503 to the first `fail_first` requests.
pub struct CallbackServer {
    /// `http://127.0.0.1:PORT/callback`.
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackServer {
    /// Starts the server.
    pub async fn start(fail_first: usize) -> Self {
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = std::sync::Arc::default();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store = received.clone();
        let app = axum::Router::new().route(
            "/callback",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let store = store.clone();
                    let seen = seen.clone();
                    async move {
                        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let headers = headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect();
                        store.lock().expect("lock").push(Received {
                            headers,
                            body: body.to_vec(),
                        });
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let app = app.layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/callback"),
            received,
            task,
        }
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until `n` callbacks arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        eventually(limit, &format!("{n} callbacks"), || async {
            self.received().len() >= n
        })
        .await;
        self.received()
    }
}

impl Drop for CallbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
