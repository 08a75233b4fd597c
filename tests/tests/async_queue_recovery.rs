//! Asynchronous invocations that survive failures, on both queue backends: a gateway restarted
//! mid-queue, a SIGKILLed queue worker, calls longer than a lease.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tributary_tests::queue::{Backend, both, enqueue};
use tributary_tests::{
    CallbackServer, GatewayOptions, GatewayProcess, NatsServer, eventually, free_port,
    read_records, recorder_function, tributary_bin,
};

/// A stack file with the recorder as `slow`, so a restarted gateway has it deployed before it answers.
fn slow_stack(dir: &Path, record: &Path, delay_ms: u32) -> PathBuf {
    let script = tributary_tests::recorder_script();
    let stack = dir.join("stack.yml");
    std::fs::write(
        &stack,
        format!(
            "functions:\n  slow:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      RECORD_FILE: {}\n      DELAY_MS: {delay_ms}\n",
            script.display(),
            record.display()
        ),
    )
    .unwrap();
    stack
}

/// The recorder deployed as `slow` from a stack file, on a fixed port so a gateway can be
/// restarted in place with its functions deployed before it answers.
struct SlowFunction {
    dir: tempfile::TempDir,
    record: PathBuf,
    port: u16,
}

impl SlowFunction {
    fn new(delay_ms: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("slow.jsonl");
        slow_stack(dir.path(), &record, delay_ms);
        Self {
            dir,
            record,
            port: free_port(),
        }
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("stack.yml")
    }

    fn options(&self, backend: &Backend, max_inflight: usize) -> GatewayOptions {
        backend
            .options()
            .port(self.port)
            .stack(self.stack())
            .arg("--no-cron")
            .env("max_inflight", max_inflight.to_string())
    }
}

/// The bodies of the calls that succeeded, once per success.
fn succeeded(record: &Path) -> Vec<String> {
    read_records(record)
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect()
}

fn delivered(record: &Path) -> BTreeSet<String> {
    succeeded(record).into_iter().collect()
}

#[tokio::test]
async fn gateway_restart_mid_queue_loses_nothing() {
    for backend in both() {
        let slow = SlowFunction::new(300);
        let record = slow.record.clone();
        let options = || slow.options(&backend, 2);
        let mut gw = GatewayProcess::start_with(options()).await;
        let n = 20;
        for i in 0..n {
            enqueue(&gw, "slow", &format!("m{i:02}"), None).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = gw.terminate(Duration::from_secs(30));
        assert!(status.success());
        let before = delivered(&record).len();
        assert!(
            before < n,
            "the restart happened mid-queue ({before} of {n} done)"
        );
        drop(gw);
        let _gw = GatewayProcess::start_with(options()).await;
        eventually(
            Duration::from_secs(60),
            "every message delivered after the restart",
            || async { delivered(&record).len() == n },
        )
        .await;
        let expected: BTreeSet<String> = (0..n).map(|i| format!("m{i:02}")).collect();
        assert_eq!(delivered(&record), expected);
        // A graceful stop acknowledged every call it finished: none runs twice (JetStream's
        // ack_wait here is 3 s: a lost ack would have been redelivered by now).
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            succeeded(&record).len(),
            n,
            "{}: calls that succeeded more than once",
            backend.name()
        );
    }
}

fn spawn_queue_worker(nats: &NatsServer, gateway: &GatewayProcess) -> Child {
    Command::new(tributary_bin())
        .arg("queue-worker")
        .env("gateway_url", &gateway.base)
        .envs(gateway.auth_env())
        .env("nats_url", &nats.url)
        .env("ack_wait", "2s")
        .env("max_inflight", "4")
        .env("metrics_port", "0")
        .env("initial_retry_wait", "50ms")
        .env("max_retry_wait", "300ms")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Some of the `n` queued messages were not done yet when the process was killed.
fn assert_killed_mid_stream(record: &Path, n: usize) {
    let before = delivered(record).len();
    assert!(before < n, "killed mid-stream ({before} of {n} done)");
}

/// Every one of the `n` messages is delivered after a restart, and no more than the
/// `max_inflight` calls the kill interrupted ran twice.
async fn assert_each_delivered_after_the_restart(record: &Path, n: usize, max_inflight: usize) {
    eventually(
        Duration::from_secs(60),
        "every message delivered after the restart",
        || async { delivered(record).len() == n },
    )
    .await;
    let calls = read_records(record).len();
    assert!(
        calls <= n + max_inflight,
        "{calls} calls for {n} messages: duplicates stay within max_inflight ({max_inflight})"
    );
}

#[tokio::test]
async fn sigkilled_worker_redelivers_every_message() {
    // Embedded: the worker runs inside the gateway, so the gateway is SIGKILLed mid-call.
    {
        let slow = SlowFunction::new(800);
        let record = slow.record.clone();
        let backend = Backend::embedded();
        let options = || slow.options(&backend, 4);
        let mut gw = GatewayProcess::start_with(options()).await;
        let n = 12;
        for i in 0..n {
            enqueue(&gw, "slow", &format!("e{i:02}"), None).await;
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        gw.kill();
        drop(gw);
        assert_killed_mid_stream(&record, n);
        let _gw = GatewayProcess::start_with(options()).await;
        assert_each_delivered_after_the_restart(&record, n, 4).await;
    }
    // NATS: a standalone queue worker is SIGKILLed mid-call and started again.
    {
        let nats = NatsServer::start();
        let slow = SlowFunction::new(800);
        let record = slow.record.clone();
        let gw = GatewayProcess::start_with(
            GatewayOptions::default()
                .stack(slow.stack())
                .arg("--no-cron")
                .env("nats_url", &nats.url)
                .env("queue_worker", "false"),
        )
        .await;
        let n = 12;
        for i in 0..n {
            enqueue(&gw, "slow", &format!("n{i:02}"), None).await;
        }
        let mut worker = spawn_queue_worker(&nats, &gw);
        eventually(
            Duration::from_secs(20),
            "the worker has calls in flight",
            || async { !read_records(&record).is_empty() },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker.kill().unwrap();
        worker.wait().unwrap();
        assert_killed_mid_stream(&record, n);
        let mut worker = spawn_queue_worker(&nats, &gw);
        assert_each_delivered_after_the_restart(&record, n, 4).await;
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
}

#[tokio::test]
async fn long_calls_keep_their_lease() {
    let backend = Backend::nats(); // ack_wait 3s; the call takes 7s
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("long.jsonl");
    let gw = GatewayProcess::start_with(backend.options()).await;
    gw.deploy_ok(recorder_function(
        "long",
        "none",
        &record,
        &[("DELAY_MS", "7000")],
    ))
    .await;
    let callbacks = CallbackServer::start(0).await;
    enqueue(&gw, "long", "patience", Some(&callbacks.url)).await;
    callbacks.wait_for(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        read_records(&record).len(),
        1,
        "not redelivered while the call ran"
    );
    assert_eq!(callbacks.received().len(), 1);
}
