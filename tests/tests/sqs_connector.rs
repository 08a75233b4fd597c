//! The SQS connector as a real process against a real moto SQS server and a real gateway.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use tributary_tests::sqs::MotoServer;
use tributary_tests::{
    ConnectorProcess, GatewayProcess, eventually, kill_mid_stream_and_restart, metric_value,
    read_records, record_header, recorder_function,
};

fn start_connector(
    gw: &GatewayProcess,
    sqs: &MotoServer,
    extra: &[(&str, &str)],
) -> ConnectorProcess {
    let base = sqs.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("rebuild_interval", "500ms"));
    env.push(("wait_time", "1s"));
    env.extend_from_slice(extra);
    ConnectorProcess::start("sqs", gw, &env)
}

#[tokio::test]
async fn fans_out_passes_headers_and_attributes_and_deletes_after_success() {
    let sqs = MotoServer::start();
    let orders = sqs.create_queue("orders").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(format!("{n}.jsonl"));
    // The default topic is the queue's name.
    gw.deploy_ok(recorder_function("a", "orders", &file("a"), &[]))
        .await;
    gw.deploy_ok(recorder_function(
        "b",
        "orders",
        &file("b"),
        &[("DELAY_MS", "300")],
    ))
    .await;
    let connector = start_connector(&gw, &sqs, &[("queue_url", orders.as_str())]);
    connector
        .wait_for_log("receiving", Duration::from_secs(30))
        .await;
    sqs.send(
        &orders,
        "order-1",
        &[("tenant", "acme"), ("trace-id", "t-9")],
        None,
    )
    .await;
    sqs.send(&orders, "order-2", &[], None).await;
    // Not deleted while a function is still running.
    eventually(Duration::from_secs(30), "a got both", || async {
        read_records(&file("a")).len() == 2
    })
    .await;
    eventually(Duration::from_secs(30), "b got both", || async {
        read_records(&file("b")).len() == 2
    })
    .await;
    eventually(Duration::from_secs(30), "deleted after success", || async {
        sqs.depth(&orders).await == 0
    })
    .await;
    for f in ["a", "b"] {
        let records = read_records(&file(f));
        let r = records.iter().find(|r| r["body"] == "order-1").unwrap();
        assert_eq!(record_header(r, "x-topic"), "orders");
        assert_eq!(record_header(r, "x-connector"), "sqs-connector");
        assert_eq!(record_header(r, "x-sqs-queue-url"), orders);
        assert_eq!(record_header(r, "x-sqs-receive-count"), "1");
        assert!(!record_header(r, "x-sqs-message-id").is_empty());
        assert_eq!(record_header(r, "x-sqs-attr-tenant"), "acme");
        assert_eq!(record_header(r, "x-sqs-attr-trace-id"), "t-9");
        assert_eq!(record_header(r, "x-sqs-message-group-id"), "");
    }
    let m = connector.metrics().await;
    let q = format!("{{queue=\"{orders}\"}}");
    assert_eq!(
        metric_value(&m, &format!("sqs_messages_received_total{q}")),
        2.0
    );
    assert_eq!(
        metric_value(&m, &format!("sqs_messages_deleted_total{q}")),
        2.0
    );
    eventually(Duration::from_secs(20), "depth metric", || async {
        connector
            .metrics()
            .await
            .contains(&format!("sqs_queue_depth{q} 0"))
    })
    .await;
}

#[tokio::test]
async fn a_failing_message_comes_back_after_the_backoff_then_is_dead_lettered() {
    let sqs = MotoServer::start();
    let jobs = sqs.create_queue("jobs").await;
    let dlq = sqs.create_queue("jobs-dlq").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.jsonl");
    // Retryable failures asking for 2 s between attempts.
    gw.deploy_ok(recorder_function(
        "broken",
        "jobs",
        &file,
        &[("ALWAYS_STATUS", "503"), ("RETRY_AFTER", "2")],
    ))
    .await;
    let connector = start_connector(
        &gw,
        &sqs,
        &[
            ("queue_url", jobs.as_str()),
            ("dead_letter_queue_url", dlq.as_str()),
            ("max_retries", "2"),
        ],
    );
    connector
        .wait_for_log("receiving", Duration::from_secs(30))
        .await;
    sqs.send(&jobs, "job-1", &[("origin", "test")], None).await;
    let letters = sqs.drain(&dlq, 1, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), 1, "{}", connector.logs());
    let attrs: BTreeMap<&str, &str> = letters[0]
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(letters[0].body, "job-1");
    assert_eq!(attrs["x-dead-letter-function"], "broken");
    assert_eq!(attrs["x-dead-letter-status"], "503");
    assert_eq!(attrs["x-dead-letter-receive-count"], "3");
    assert_eq!(attrs["x-original-queue-url"], jobs.as_str());
    assert_eq!(attrs["origin"], "test");

    // One attempt per delivery, each after the 2 s the function asked for, not sooner.
    let records = read_records(&file);
    let counts: Vec<&str> = records
        .iter()
        .map(|r| record_header(r, "x-sqs-receive-count"))
        .collect();
    assert_eq!(counts, vec!["1", "2", "3"]);
    let times: Vec<f64> = records.iter().map(|r| r["t"].as_f64().unwrap()).collect();
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= 1.5, "redelivered too early: {times:?}");
    }
    eventually(
        Duration::from_secs(20),
        "deleted from its queue",
        || async { sqs.depth(&jobs).await == 0 },
    )
    .await;
}

#[tokio::test]
async fn without_a_dead_letter_queue_a_failed_message_stays_for_the_redrive_policy() {
    let sqs = MotoServer::start();
    let jobs = sqs.create_queue("kept").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kept.jsonl");
    gw.deploy_ok(recorder_function(
        "kept",
        "kept",
        &file,
        &[("ALWAYS_STATUS", "400")],
    ))
    .await;
    let connector = start_connector(
        &gw,
        &sqs,
        &[("queue_url", jobs.as_str()), ("visibility_timeout", "2s")],
    );
    connector
        .wait_for_log("receiving", Duration::from_secs(30))
        .await;
    sqs.send(&jobs, "keep-me", &[], None).await;
    // A permanent failure with nowhere to dead-letter: not deleted, so SQS delivers it again
    // once its visibility timeout ends (and would redrive it after maxReceiveCount).
    eventually(
        Duration::from_secs(30),
        "delivered a second time",
        || async { read_records(&file).len() >= 2 },
    )
    .await;
    let counts: Vec<String> = read_records(&file)
        .iter()
        .map(|r| record_header(r, "x-sqs-receive-count").to_owned())
        .collect();
    assert_eq!(&counts[..2], ["1", "2"]);
    assert!(
        sqs.depth(&jobs).await >= 1,
        "the message is still in its queue"
    );
    assert!(
        connector
            .logs()
            .contains("left in its queue for the queue's redrive policy")
    );
    let m = connector.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            &format!("sqs_messages_deleted_total{{queue=\"{jobs}\"}}")
        ),
        0.0
    );
}

#[tokio::test]
async fn a_long_call_is_not_delivered_twice() {
    let sqs = MotoServer::start();
    let slow = sqs.create_queue("slow").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.jsonl");
    gw.deploy_ok(recorder_function(
        "slow",
        "slow",
        &file,
        &[("DELAY_MS", "10000")],
    ))
    .await;
    let connector = start_connector(
        &gw,
        &sqs,
        &[
            ("queue_url", slow.as_str()),
            ("visibility_timeout", "4s"),
            ("upstream_timeout", "30s"),
        ],
    );
    connector
        .wait_for_log("receiving", Duration::from_secs(30))
        .await;
    sqs.send(&slow, "slow-1", &[], None).await;
    eventually(
        Duration::from_secs(40),
        "the call finished and was deleted",
        || async { read_records(&file).len() == 1 && sqs.depth(&slow).await == 0 },
    )
    .await;
    // Wait past another visibility timeout: nothing comes back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(read_records(&file).len(), 1);
    let m = connector.metrics().await;
    let extended = metric_value(
        &m,
        &format!("sqs_visibility_extensions_total{{queue=\"{slow}\"}}"),
    );
    assert!(
        extended >= 3.0,
        "{extended} extensions for a 10 s call with a 4 s timeout"
    );
}

#[tokio::test]
async fn fifo_keeps_order_per_group_and_runs_groups_concurrently() {
    let sqs = MotoServer::start();
    let fifo = sqs.create_queue("events.fifo").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fifo.jsonl");
    gw.deploy_ok(recorder_function(
        "fifo",
        "events",
        &file,
        &[("DELAY_MS", "40")],
    ))
    .await;
    for i in 0..10 {
        for g in ["g1", "g2", "g3"] {
            sqs.send(&fifo, &format!("{g}-{i}"), &[], Some(g)).await;
        }
    }
    let _connector = start_connector(
        &gw,
        &sqs,
        &[
            ("queue_url", fifo.as_str()),
            ("topic", "events"),
            ("max_inflight", "8"),
        ],
    );
    eventually(Duration::from_secs(60), "all 30 delivered", || async {
        read_records(&file).len() >= 30
    })
    .await;
    let records = read_records(&file);
    let mut per_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &records {
        let g = record_header(r, "x-sqs-message-group-id").to_owned();
        per_group
            .entry(g)
            .or_default()
            .push(r["body"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_group.len(), 3);
    for (g, got) in &per_group {
        let want: Vec<String> = (0..10).map(|i| format!("{g}-{i}")).collect();
        assert_eq!(got, &want, "group {g} out of order");
    }
    let overlap = records
        .iter()
        .map(|r| r["inflight"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(overlap >= 2, "groups never ran concurrently");
}

#[tokio::test]
async fn sigkill_mid_batch_then_restart_delivers_everything() {
    const N: usize = 200;
    let sqs = MotoServer::start();
    let queue = sqs.create_queue("stream").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    gw.deploy_ok(recorder_function(
        "count",
        "stream",
        &file,
        &[("DELAY_MS", "20")],
    ))
    .await;
    sqs.send_many(&queue, "s", N).await;
    let env = [
        ("queue_url", queue.as_str()),
        ("visibility_timeout", "3s"),
        ("max_inflight", "16"),
        ("print_response", "false"),
    ];
    let (_, duplicates, _second) =
        kill_mid_stream_and_restart(|| start_connector(&gw, &sqs, &env), &file, N).await;
    // Redelivered: at most what was received but not yet deleted at the kill.
    assert!(duplicates <= 16 + 10, "{duplicates} duplicates");
    eventually(Duration::from_secs(30), "the queue is empty", || async {
        sqs.depth(&queue).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_missing_queue_or_bad_credentials_give_a_clear_error() {
    let sqs = MotoServer::start();
    let missing = format!("{}/123456789012/no-such-queue", sqs.endpoint);
    let gw = GatewayProcess::start().await;
    let run = |env: Vec<(String, String)>| {
        let out = std::process::Command::new(tributary_tests::tributary_bin())
            .args(["connector", "sqs"])
            .env("gateway_url", &gw.base)
            .env("metrics_port", "0")
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut env = sqs.connector_env();
    env.push(("queue_url".into(), missing.clone()));
    let (code, stderr) = run(env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot use queue {missing}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("NonExistentQueue") || stderr.contains("does not exist"),
        "{stderr}"
    );

    // A server that checks credentials refuses the fake ones.
    let strict = MotoServer::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let mut env = strict.connector_env();
    env.push((
        "queue_url".into(),
        format!("{}/123456789012/orders", strict.endpoint),
    ));
    let (code, stderr) = run(env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot use queue"), "{stderr}");
    assert!(
        stderr.contains("InvalidClientTokenId") || stderr.contains("security token"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    let (code, stderr) = run(vec![("queue_url".into(), "orders".into())]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not a URL"), "{stderr}");
}
