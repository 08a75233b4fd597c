//! The container image that `scripts/image` builds from scratch, run with podman: it answers
//! requests, every subcommand stops promptly on SIGTERM as PID 1, and the gateway runs on a
//! read-only root filesystem with its state on a volume. (Built from the dev profile here; the
//! release image is the same recipe.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tributary_tests::{eventually, free_port, workspace_root};

const TAG: &str = "localhost/tributary:test";
/// The Kafka connector program's own image.
const KAFKA_TAG: &str = "localhost/tributary-kafka-connector:test";

/// The ulimits every container runs with (hard limits cannot be raised here).
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

/// podman with the OCI runtime that works on this kernel (runc; `TRIBUTARY_OCI_RUNTIME`
/// chooses another).
fn podman(args: &[&str]) -> Output {
    let runtime = std::env::var("TRIBUTARY_OCI_RUNTIME").unwrap_or_else(|_| "runc".to_owned());
    Command::new("podman")
        .args(["--runtime", &runtime])
        .args(args)
        .output()
        .expect("run podman (scripts/setup installs it)")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds the image once per test process, from the binary the other tests run (built by
/// scripts/test before the tests).
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_image(TAG, &[]));
    TAG
}

/// Builds the Kafka connector program's own image once per test process.
fn kafka_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_image(KAFKA_TAG, &["--program", "tributary-kafka-connector"]));
    KAFKA_TAG
}

/// `scripts/image --binary <the tests' tributary> --tag tag extra...`, which must succeed.
fn build_image(tag: &str, extra: &[&str]) {
    let out = Command::new("bash")
        .arg(workspace_root().join("scripts/image"))
        .arg("--binary")
        .arg(tributary_tests::tributary_bin())
        .args(["--tag", tag])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/image failed:\n{}",
        text(&out)
    );
}

/// `podman run --rm` with the ulimits this machine allows, then `args` (image and command).
fn run_once(args: &[&str]) -> Output {
    let mut all = vec!["run", "--rm"];
    all.extend(ULIMITS);
    all.extend(args);
    podman(&all)
}

/// A detached container on the host network, removed on drop.
struct Container(String);

impl Container {
    fn run(name: &str, extra: &[&str], command: &[&str]) -> Self {
        Self::run_image(image(), name, extra, command)
    }

    fn run_image(image: &str, name: &str, extra: &[&str], command: &[&str]) -> Self {
        let _ = podman(&["rm", "-f", name]);
        let mut args = vec!["run", "-d", "--name", name, "--network", "host"];
        args.extend(ULIMITS);
        args.extend(extra);
        args.push(image);
        args.extend(command);
        let out = podman(&args);
        assert!(out.status.success(), "podman run: {}", text(&out));
        Self(name.to_owned())
    }

    fn logs(&self) -> String {
        text(&podman(&["logs", &self.0]))
    }

    /// `podman stop` (SIGTERM, SIGKILL after 30 s): how long it took and the exit code.
    fn stop(&self) -> (Duration, String) {
        let started = Instant::now();
        let out = podman(&["stop", "-t", "30", &self.0]);
        assert!(out.status.success(), "podman stop: {}", text(&out));
        let took = started.elapsed();
        let code = podman(&["inspect", &self.0, "--format", "{{.State.ExitCode}}"]);
        (took, text(&code).trim().to_owned())
    }

    /// After 2 s of retrying (nothing answers it), the connector in this container started and
    /// stops within 5 s of SIGTERM, with status 0.
    fn assert_a_connector_that_stops_on_sigterm(&self) {
        std::thread::sleep(Duration::from_secs(2));
        let (took, code) = self.stop();
        let logs = self.logs();
        assert!(logs.contains("connector starting"), "{}: {logs}", self.0);
        assert!(
            took < Duration::from_secs(5),
            "{}: stopped after {took:?}:\n{logs}",
            self.0
        );
        assert_eq!(code, "0", "{}: {logs}", self.0);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", &self.0]);
    }
}

#[test]
fn the_image_prints_its_version_and_runs_as_non_root() {
    let out = run_once(&[image(), "--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("tributary "), "{}", text(&out));
    let inspect = podman(&["image", "inspect", image(), "--format", "{{.Config.User}}"]);
    assert_eq!(
        text(&inspect).trim(),
        "10001:10001",
        "runs as a non-root user"
    );
}

#[tokio::test]
async fn echo_answers_and_stops_on_sigterm_as_pid_1() {
    let port = free_port().to_string();
    let c = Container::run(
        "tributary-test-echo",
        &["-e", &format!("PORT={port}")],
        &["echo"],
    );
    let url = format!("http://127.0.0.1:{port}/hello");
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(20),
        "echo in the container to answer",
        || async {
            match http.post(&url).body("ping").send().await {
                Ok(r) => r.text().await.is_ok_and(|t| t == "ping"),
                Err(_) => false,
            }
        },
    )
    .await;
    let (took, code) = c.stop();
    assert!(
        took < Duration::from_secs(5),
        "stopped after {took:?}:\n{}",
        c.logs()
    );
    assert_eq!(code, "0");
}

#[tokio::test]
async fn the_gateway_runs_on_a_read_only_root_with_a_state_volume() {
    let port = free_port().to_string();
    let volume = format!("tributary-test-state-{port}");
    let c = Container::run(
        "tributary-test-gateway",
        &["--read-only", "-v", &format!("{volume}:/var/lib/tributary")],
        &["gateway", "--port", &port],
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(20),
        "the gateway in the container",
        || async {
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    // Auth is on; the generated password is in the volume.
    let r = http
        .get(format!("{base}/system/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(c.logs().contains("basic auth"), "{}", c.logs());
    let (took, code) = c.stop();
    assert!(took < Duration::from_secs(15), "stopped after {took:?}");
    assert_eq!(code, "0", "{}", c.logs());
    drop(c);
    let _ = podman(&["volume", "rm", "-f", &volume]);
}

#[test]
fn a_connector_stops_on_sigterm_as_pid_1() {
    // No gateway (nor broker) answers: each connector keeps retrying until told to stop. As
    // `tributary connector cron`, and as the connectors' own programs the charts run.
    let port = free_port().to_string();
    let gateway = format!("gateway_url=http://127.0.0.1:{port}");
    let broker = format!("broker_hosts=127.0.0.1:{port}");
    let runs: [(&str, Vec<&str>, &[&str]); 3] = [
        ("cron", vec![], &["connector", "cron"]),
        (
            "cron-program",
            vec!["--entrypoint", "/usr/local/bin/tributary-cron-connector"],
            &[],
        ),
        (
            "kafka-program",
            vec![
                "--entrypoint",
                "/usr/local/bin/tributary-kafka-connector",
                "-e",
                &broker,
            ],
            &[],
        ),
    ];
    for (name, extra, command) in runs {
        // Host network, tests in parallel: each its own metrics port.
        let metrics = format!("metrics_port={}", free_port());
        let mut extra = extra;
        extra.extend(["-e", &gateway, "-e", "basic_auth=false", "-e", &metrics]);
        let c = Container::run(&format!("tributary-test-{name}"), &extra, command);
        c.assert_a_connector_that_stops_on_sigterm();
    }
}

#[test]
fn a_connector_programs_own_image_holds_only_it_and_stops_on_sigterm_as_pid_1() {
    let image = kafka_image();
    // Only the program (and what it links): no `tributary` in it.
    let out = run_once(&[
        "--entrypoint",
        "/usr/local/bin/tributary",
        image,
        "--version",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("/usr/local/bin/tributary") && !text(&out).contains("rlimit"),
        "{}",
        text(&out)
    );
    let out = run_once(&[image, "--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).starts_with("tributary-kafka-connector "),
        "{}",
        text(&out)
    );

    // Its entrypoint is the connector: no broker answers, it keeps retrying until stopped.
    let port = free_port().to_string();
    let c = Container::run_image(
        image,
        "tributary-test-kafka-image",
        &[
            "-e",
            &format!("broker_hosts=127.0.0.1:{port}"),
            "-e",
            &format!("gateway_url=http://127.0.0.1:{port}"),
            "-e",
            "basic_auth=false",
            "-e",
            &format!("metrics_port={}", free_port()),
        ],
        &[],
    );
    c.assert_a_connector_that_stops_on_sigterm();
}
