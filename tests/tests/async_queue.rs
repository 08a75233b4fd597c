//! Asynchronous invocations through both queue backends (embedded SQLite and a real
//! `nats-server -js`): callbacks, retries, dead letters, restarts and SIGKILLed workers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{
    CallbackServer, GatewayOptions, GatewayProcess, NatsServer, eventually, free_port,
    read_records, recorder_function, tributary_bin,
};

/// Where queued requests live for one test.
enum Backend {
    Embedded(tempfile::TempDir),
    Nats(NatsServer),
}

impl Backend {
    fn embedded() -> Self {
        Self::Embedded(tempfile::tempdir().unwrap())
    }

    fn nats() -> Self {
        Self::Nats(NatsServer::start())
    }

    /// Gateway options selecting this backend, with fast retries.
    fn options(&self) -> GatewayOptions {
        let o = GatewayOptions::default()
            .env("initial_retry_wait", "50ms")
            .env("max_retry_wait", "300ms")
            .env("max_retry_attempts", "5");
        match self {
            Self::Embedded(dir) => o
                .arg("--queue-path")
                .arg(dir.path().join("queue.db").to_str().unwrap()),
            Self::Nats(nats) => o.env("nats_url", &nats.url).env("ack_wait", "3s"),
        }
    }
}

fn both() -> [Backend; 2] {
    [Backend::embedded(), Backend::nats()]
}

async fn enqueue(
    gw: &GatewayProcess,
    function: &str,
    body: &str,
    callback: Option<&str>,
) -> String {
    let mut req = gw
        .http
        .post(gw.url(&format!("/async-function/{function}")))
        .body(body.to_owned());
    if let Some(url) = callback {
        req = req.header("X-Callback-Url", url);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    r.headers()["x-call-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn async_invoke_posts_the_result_to_the_callback() {
    for backend in both() {
        let gw = GatewayProcess::start_with(backend.options()).await;
        gw.deploy_ok(tributary_tests::echo_function("echo")).await;
        let callbacks = CallbackServer::start(1).await; // the first callback attempt is refused
        let r = gw
            .http
            .put(gw.url("/async-function/echo/orders/7?x=1"))
            .header("X-Callback-Url", &callbacks.url)
            .header("X-Call-Id", "call-42")
            .header("X-Custom", "abc")
            .header("Content-Type", "application/json")
            .body(r#"{"id":7}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers()["x-call-id"], "call-42");
        let got = callbacks.wait_for(1, Duration::from_secs(20)).await;
        let cb = &got[0];
        assert_eq!(cb.body, br#"{"id":7}"#);
        assert_eq!(cb.headers["x-call-id"], "call-42");
        assert_eq!(cb.headers["x-function-name"], "echo");
        assert_eq!(cb.headers["x-function-status"], "200");
        assert!(cb.headers["x-duration-seconds"].parse::<f64>().unwrap() >= 0.0);
        assert_eq!(cb.headers["content-type"], "application/json");
        // The function's own response headers come along; the request reached it intact.
        assert_eq!(cb.headers["x-echo-method"], "PUT");
        assert_eq!(cb.headers["x-echo-uri"], "/orders/7?x=1");
        assert_eq!(cb.headers["x-echo-x-custom"], "abc");
        assert_eq!(cb.headers["x-echo-x-call-id"], "call-42");
        let metrics = gw.metrics().await;
        assert!(
            metrics.contains(r#"queue_worker_callbacks_total{result="delivered"} 1"#),
            "{metrics}"
        );
        assert!(metrics.contains("gateway_queue_depth 0"), "{metrics}");
    }
}

#[tokio::test]
async fn bad_async_requests_are_rejected() {
    let backend = Backend::embedded();
    let gw = GatewayProcess::start_with(backend.options().arg("--max-body-size").arg("1K")).await;
    gw.deploy_ok(tributary_tests::echo_function("echo")).await;
    let r = gw
        .http
        .post(gw.url("/async-function/nope"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = gw
        .http
        .post(gw.url("/async-function/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = gw
        .http
        .post(gw.url("/async-function/echo"))
        .header("X-Callback-Url", "ftp://example/x")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn large_bodies_work_up_to_the_limit() {
    // NATS needs max_payload raised to carry 5 MB; the embedded queue needs nothing.
    let nats = NatsServer::start_with_config("max_payload: 8MB");
    for backend in [Backend::embedded(), Backend::Nats(nats)] {
        let gw =
            GatewayProcess::start_with(backend.options().arg("--max-body-size").arg("6M")).await;
        gw.deploy_ok(tributary_tests::echo_function("echo")).await;
        let callbacks = CallbackServer::start(0).await;
        let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let r = gw
            .http
            .post(gw.url("/async-function/echo"))
            .header("X-Callback-Url", &callbacks.url)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let got = callbacks.wait_for(1, Duration::from_secs(30)).await;
        assert_eq!(got[0].body.len(), big.len());
        assert!(got[0].body == big, "body changed on the way");
    }
    // With the NATS default max_payload (1 MB) a larger body is refused clearly.
    let nats = Backend::nats();
    let gw = GatewayProcess::start_with(nats.options()).await;
    gw.deploy_ok(tributary_tests::echo_function("echo")).await;
    let r = gw
        .http
        .post(gw.url("/async-function/echo"))
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    for backend in both() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("flaky.jsonl");
        let gw = GatewayProcess::start_with(backend.options()).await;
        gw.deploy_ok(recorder_function(
            "flaky",
            "none",
            &f,
            &[("FAIL_FIRST", "2"), ("FAIL_STATUS", "503")],
        ))
        .await;
        let callbacks = CallbackServer::start(0).await;
        enqueue(&gw, "flaky", "job-1", Some(&callbacks.url)).await;
        let got = callbacks.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(got[0].headers["x-function-status"], "200");
        let statuses: Vec<i64> = read_records(&f)
            .iter()
            .map(|r| r["status"].as_i64().unwrap())
            .collect();
        assert_eq!(statuses, [503, 503, 200]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            callbacks.received().len(),
            1,
            "one callback for one request"
        );
    }
}

#[tokio::test]
async fn dead_letters_after_the_retry_limit() {
    for backend in both() {
        let dir = tempfile::tempdir().unwrap();
        let (bad, limited) = (
            dir.path().join("bad.jsonl"),
            dir.path().join("limited.jsonl"),
        );
        let gw = GatewayProcess::start_with(backend.options().env("max_retry_attempts", "3")).await;
        gw.deploy_ok(recorder_function(
            "bad",
            "none",
            &bad,
            &[("ALWAYS_STATUS", "500")],
        ))
        .await;
        let mut d = recorder_function("limited", "none", &limited, &[("ALWAYS_STATUS", "502")]);
        d["annotations"]["com.openfaas.retry.attempts"] = json!("2");
        gw.deploy_ok(d).await;
        let callbacks = CallbackServer::start(0).await;
        let id = enqueue(&gw, "bad", "doomed", Some(&callbacks.url)).await;
        let id2 = enqueue(&gw, "limited", "also doomed", None).await;
        let got = callbacks.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(
            got[0].headers["x-function-status"], "500",
            "the final answer is reported"
        );
        eventually(
            Duration::from_secs(10),
            "two dead letters listed",
            || async {
                gw.get_json::<Vec<Value>>("/system/async-dead-letters")
                    .await
                    .len()
                    == 2
            },
        )
        .await;
        let letters: Vec<Value> = gw.get_json("/system/async-dead-letters").await;
        let by_id = |id: &str| letters.iter().find(|l| l["callId"] == id).unwrap().clone();
        let l = by_id(&id);
        assert_eq!(
            (
                l["function"].as_str(),
                l["status"].as_i64(),
                l["attempts"].as_i64()
            ),
            (Some("bad"), Some(500), Some(3))
        );
        assert!(
            l["reason"]
                .as_str()
                .unwrap()
                .contains("gave up after 3 attempts"),
            "{l}"
        );
        assert_eq!(
            by_id(&id2)["attempts"],
            2,
            "com.openfaas.retry.attempts overrides the default"
        );
        assert_eq!(read_records(&bad).len(), 3);
        assert_eq!(read_records(&limited).len(), 2);
        let metrics = gw.metrics().await;
        assert!(
            metrics
                .contains(r#"queue_worker_dead_letters_total{function_name="bad.openfaas-fn"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"queue_worker_retries_total{function_name="bad.openfaas-fn"} 2"#),
            "{metrics}"
        );
        redrive_and_delete(&gw, &letters, &id, &id2, &bad).await;
    }
}

/// The dead letters' REST routes: figures, delete one, redrive one (it runs again, from attempt 1),
/// redrive all, and 404s for ids that are gone.
async fn redrive_and_delete(
    gw: &GatewayProcess,
    letters: &[Value],
    id: &str,
    id2: &str,
    bad: &Path,
) {
    let stats: Value = gw.get_json("/system/async-queue").await;
    assert_eq!(stats["deadLetters"], 2, "{stats}");
    assert_eq!(stats["depth"], 0, "{stats}");
    let key = |call: &str| {
        letters.iter().find(|l| l["callId"] == call).unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    // gw.http sends the gateway's credentials.
    let send = |method: reqwest::Method, path: String| {
        let request = gw.http.request(method, gw.url(&path));
        async move { request.send().await.unwrap() }
    };
    let path = format!("/system/async-dead-letters/{}", key(id2));
    assert_eq!(
        send(reqwest::Method::DELETE, path.clone()).await.status(),
        204
    );
    let again = send(reqwest::Method::DELETE, path).await;
    assert_eq!(again.status(), 404);
    assert!(again.text().await.unwrap().contains("not found"));

    let path = format!("/system/async-dead-letters/{}/redrive", key(id));
    assert_eq!(
        send(reqwest::Method::POST, path.clone()).await.status(),
        202
    );
    assert_eq!(send(reqwest::Method::POST, path).await.status(), 404);
    // It runs three more times and is dead-lettered again, under a new id.
    eventually(
        Duration::from_secs(20),
        "redriven and dead again",
        || async {
            let letters: Vec<Value> = gw.get_json("/system/async-dead-letters").await;
            read_records(bad).len() == 6 && letters.len() == 1 && letters[0]["callId"] == id
        },
    )
    .await;
    let all = send(
        reqwest::Method::POST,
        "/system/async-dead-letters/redrive".into(),
    )
    .await;
    assert_eq!(all.status(), 202);
    assert_eq!(all.json::<Value>().await.unwrap()["redriven"], 1);
    eventually(Duration::from_secs(20), "redriven all", || async {
        read_records(bad).len() == 9
    })
    .await;
}

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

fn delivered(record: &Path) -> BTreeSet<String> {
    read_records(record)
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect()
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
        let ok = read_records(&record)
            .iter()
            .filter(|r| r["status"] == 200)
            .count();
        let name = match backend {
            Backend::Embedded(_) => "embedded",
            Backend::Nats(_) => "nats",
        };
        assert_eq!(ok, n, "{name}: calls that succeeded more than once");
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
        let before = delivered(&record).len();
        assert!(before < n, "killed mid-stream ({before} of {n} done)");
        let _gw = GatewayProcess::start_with(options()).await;
        eventually(
            Duration::from_secs(60),
            "every message delivered",
            || async { delivered(&record).len() == n },
        )
        .await;
        let calls = read_records(&record).len();
        assert!(
            calls <= n + 4,
            "{calls} calls for {n} messages: duplicates stay within max_inflight (4)"
        );
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
        let before = delivered(&record).len();
        assert!(before < n, "killed mid-stream ({before} of {n} done)");
        let mut worker = spawn_queue_worker(&nats, &gw);
        eventually(
            Duration::from_secs(60),
            "every message delivered after the restart",
            || async { delivered(&record).len() == n },
        )
        .await;
        let calls = read_records(&record).len();
        assert!(
            calls >= n && calls <= n + 4,
            "{calls} calls for {n} messages (duplicates bounded by max_inflight 4)"
        );
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
