//! Helpers shared by the workspace integration tests, in one place: the connector SDK's test
//! harness (a gateway process, the recording function, an in-memory source; re-exported here),
//! connector processes, callback servers and the real brokers tests start (NATS, Kafka, SQS)
//! and the Kubernetes control plane.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use tributary_connector_sdk::test_util::{
    GatewayOptions, GatewayProcess, connector_bin, echo_function, eventually, fork_function,
    free_port, process_alive, read_records, record_bodies, record_header, recorder_function,
    recorder_script, signal, spawn_logged, tributary_bin, wait_exit,
};

pub mod charts;
pub mod kafka;
pub mod kube;
pub mod queue;
pub mod sqs;

/// Connector SDK helpers: an in-memory source whose acknowledgements a test can watch.
pub mod sdk {
    pub use tributary_connector_sdk::test_util::{
        AckEvent, ChannelSource, Feed, TestAck, channel_source, test_config,
    };
}

/// Runs faas-cli with its config in `home`, against `gateway`.
pub fn faas_cli(cli: &Path, home: &Path, gateway: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(cli)
        .args(args)
        .args(["--gateway", gateway])
        .env("HOME", home)
        .env_remove("OPENFAAS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run faas-cli");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("run faas-cli")
        .write_all(stdin.as_bytes())
        .expect("run faas-cli");
    child.wait_with_output().expect("run faas-cli")
}

/// A command's stdout and stderr, as text.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Calls `name` from `workers` loops, each waiting `pause` between calls whose answer takes
/// `sleep_ms` (the echo function's `X-Echo-Sleep-Ms`), until stopped; counts the calls that did
/// not answer 200.
pub struct CallLoad {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CallLoad {
    /// Starts the loops.
    pub fn start(
        gw: &GatewayProcess,
        name: &str,
        workers: usize,
        sleep_ms: u64,
        pause: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (http, url) = (gw.http.clone(), gw.url(&format!("/function/{name}")));
                let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = http
                            .post(&url)
                            .header("X-Echo-Sleep-Ms", sleep_ms.to_string())
                            .body("load")
                            .send()
                            .await;
                        if !r.is_ok_and(|r| r.status() == 200) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            failed,
            done,
            tasks,
        }
    }

    /// Stops the load; returns (calls made, calls failed).
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a load loop panicked");
        }
        (
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
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
    /// Starts connector `kind`'s own program (`tributary-<kind>-connector`, what the charts
    /// run) against `gateway` (with its credentials) and extra env settings.
    pub fn start(kind: &str, gateway: &GatewayProcess, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics_port = free_port();
        let mut cmd = Command::new(connector_bin(kind));
        cmd.env("gateway_url", &gateway.base)
            .env("metrics_port", metrics_port.to_string())
            .envs(gateway.auth_env())
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

/// One of OpenFaaS's own programs from `../shared/openfaas/bin` (faas-cli, of-gateway, ...), or
/// `None` after saying loudly that the calling test is skipped (a user's checkout has no
/// `../shared`).
pub fn openfaas_program(name: &str) -> Option<PathBuf> {
    let path = workspace_root().join("../shared/openfaas/bin").join(name);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: OpenFaaS's {name} is not at {} (../shared/openfaas is absent): this compatibility test did not run",
            path.display()
        );
        None
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

/// Publishes to JetStream and waits until the stream has it.
pub async fn js_publish(js: &async_nats::jetstream::Context, subject: String, body: String) {
    js.publish(subject, body.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
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
    /// Creates a file-backed JetStream stream `name` on `subjects`; a context to publish with.
    pub async fn stream(&self, name: &str, subjects: &str) -> async_nats::jetstream::Context {
        let client = async_nats::connect(&self.url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("stream");
        js
    }

    /// `tributary connector nats` in JetStream mode on `stream` for `topics` (topic map rebuilt
    /// every 500ms), with extra settings.
    pub fn jetstream_connector(
        &self,
        gw: &GatewayProcess,
        stream: &str,
        topics: &str,
        extra: &[(&str, &str)],
    ) -> ConnectorProcess {
        let mut env = vec![
            ("nats_url", self.url.as_str()),
            ("topics", topics),
            ("nats_mode", "jetstream"),
            ("stream", stream),
            ("rebuild_interval", "500ms"),
        ];
        env.extend_from_slice(extra);
        ConnectorProcess::start("nats", gw, &env)
    }

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

/// An HTTP server on a free port that records every POST to `/callback` and below (for
/// `X-Callback-Url`, or as an OTLP endpoint), answering 503 to the first `fail_first` requests.
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
        let handler = axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    store.lock().expect("lock").push(Received {
                        headers,
                        body: body.to_vec(),
                    });
                    axum::http::StatusCode::OK
                }
            },
        );
        // Also below /callback: an OTLP exporter appends /v1/traces to its endpoint.
        let app = axum::Router::new()
            .route("/callback", handler.clone())
            .route("/callback/{*rest}", handler);
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
