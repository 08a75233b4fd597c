//! The connector SDK's runtime against a real gateway and real function processes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    Connector, ConnectorMetrics, DeliveryOrder, InvocationOutcome, TopicMapSync, run,
};
use tributary_tests::sdk::{AckEvent, channel_source, test_config};
use tributary_tests::{
    GatewayOptions, GatewayProcess, metric_value, read_records, recorder_function,
};

fn record_file(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    dir.path().join(format!("{name}.jsonl"))
}

#[tokio::test]
async fn topic_map_is_built_from_annotations_across_namespaces() {
    let gw = GatewayProcess::start().await;
    let mut a = tributary_tests::fork_function("a", "cat");
    a["annotations"] = json!({"topic": "payments, refunds"});
    let mut b = tributary_tests::fork_function("b", "cat");
    b["annotations"] = json!({"topic": "payments"});
    b["namespace"] = json!("team-b");
    let mut c = tributary_tests::fork_function("c", "cat");
    c["annotations"] = json!({"other": "x"});
    for d in [a, b, c] {
        gw.deploy_ok(d).await;
    }
    let config = gw.connector_config().build().unwrap();
    let controller = TopicMapSync::new(&config, ConnectorMetrics::new()).unwrap();
    let map = controller.sync().await.unwrap();
    assert_eq!(map.functions_for("payments"), ["a", "b.team-b"]);
    assert_eq!(map.functions_for("refunds"), ["a"]);
    assert_eq!(map.topics(), ["payments", "refunds"]);
    assert_eq!(map.functions().len(), 3);

    // A removal shows up on the next sync.
    gw.remove("a").await;
    let map = controller.sync().await.unwrap();
    assert_eq!(map.functions_for("payments"), ["b.team-b"]);
    assert!(map.functions_for("refunds").is_empty());
}

#[tokio::test]
async fn fans_out_to_every_subscriber_with_headers_and_acks_once() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (record_file(&dir, "a"), record_file(&dir, "b"));
    gw.deploy_ok(recorder_function("a", "orders", &fa, &[]))
        .await;
    let mut b = recorder_function("b", "orders,refunds", &fb, &[]);
    b["namespace"] = json!("team-b");
    gw.deploy_ok(b).await;

    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let config = gw
        .connector_config()
        .content_type("application/json")
        .build()
        .unwrap();
    let outcomes: Arc<Mutex<Vec<InvocationOutcome>>> = Arc::default();
    let seen = outcomes.clone();
    let connector = Connector::new(config)
        .with_subscriber(move |o: &InvocationOutcome| seen.lock().unwrap().push(o.clone()));
    let runtime = tokio::spawn(connector.run(source, cancel.clone()));

    for i in 0..5 {
        let mut context = BTreeMap::new();
        context.insert("offset".to_owned(), i.to_string());
        let m = feed
            .message("orders", &format!("m{i}"))
            .with_header("X-Custom", format!("v{i}"))
            .with_context(context);
        feed.tx.send(m).await.unwrap();
    }
    let events = feed.events(5, Duration::from_secs(20)).await;
    assert!(
        events.iter().all(|(_, e)| *e == AckEvent::Ack),
        "{events:?}"
    );
    let a = read_records(&fa);
    let b = read_records(&fb);
    assert_eq!(a.len(), 5);
    assert_eq!(b.len(), 5);
    let h = &a[0]["headers"];
    assert_eq!(h["x-topic"], "orders");
    assert_eq!(h["x-connector"], "test-connector");
    assert_eq!(h["content-type"], "application/json");
    assert!(
        h["user-agent"]
            .as_str()
            .unwrap()
            .starts_with("tributary-connector/"),
        "{h}"
    );
    assert!(h["x-custom"].as_str().unwrap().starts_with('v'));
    // Outcomes carry function, topic, status, body, attempts and the source context.
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 10);
    let o = outcomes.iter().find(|o| o.function == "b.team-b").unwrap();
    assert_eq!(o.topic, "orders");
    assert_eq!(o.status, Some(200));
    assert_eq!(o.attempts, 1);
    assert!(std::str::from_utf8(&o.body).unwrap().starts_with("ok m"));
    assert!(o.context.contains_key("offset"));
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn retries_503_twice_then_acks_once() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = record_file(&dir, "flaky");
    gw.deploy_ok(recorder_function(
        "flaky",
        "jobs",
        &f,
        &[("FAIL_FIRST", "2"), ("FAIL_STATUS", "503")],
    ))
    .await;
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let runtime = tokio::spawn(run(
        gw.connector_config().max_retries(5u32).build().unwrap(),
        source,
        cancel.clone(),
    ));
    for i in 0..4 {
        feed.send("jobs", &format!("job-{i}")).await;
    }
    let events = feed.events(4, Duration::from_secs(20)).await;
    assert!(
        events.iter().all(|(_, e)| *e == AckEvent::Ack),
        "{events:?}"
    );
    let records = read_records(&f);
    assert_eq!(records.len(), 12, "3 attempts for each of 4 messages");
    for i in 0..4 {
        let body = format!("job-{i}");
        let statuses: Vec<i64> = records
            .iter()
            .filter(|r| r["body"] == body)
            .map(|r| r["status"].as_i64().unwrap())
            .collect();
        assert_eq!(statuses, [503, 503, 200], "{body}");
    }
    // No further acknowledgement arrives: each message was acked exactly once.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), feed.acks.recv())
            .await
            .is_err()
    );
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn always_failing_function_is_dead_lettered_after_max_retries() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (bad, fine, rejecting) = (
        record_file(&dir, "bad"),
        record_file(&dir, "fine"),
        record_file(&dir, "rejecting"),
    );
    gw.deploy_ok(recorder_function(
        "bad",
        "jobs",
        &bad,
        &[("ALWAYS_STATUS", "500")],
    ))
    .await;
    gw.deploy_ok(recorder_function("fine", "jobs", &fine, &[]))
        .await;
    gw.deploy_ok(recorder_function(
        "rejecting",
        "strict",
        &rejecting,
        &[("ALWAYS_STATUS", "400")],
    ))
    .await;
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let runtime = tokio::spawn(run(
        gw.connector_config().max_retries(2u32).build().unwrap(),
        source,
        cancel.clone(),
    ));
    feed.send("jobs", "doomed").await;
    feed.send("strict", "invalid").await;
    let events: HashMap<String, AckEvent> = feed
        .events(2, Duration::from_secs(20))
        .await
        .into_iter()
        .collect();

    let AckEvent::DeadLetter(letter) = &events["doomed"] else {
        panic!("{events:?}")
    };
    assert_eq!(letter.topic, "jobs");
    assert_eq!(
        letter.failures.len(),
        1,
        "only the failing function is named: {letter:?}"
    );
    assert_eq!(letter.failures[0].function, "bad");
    assert_eq!(letter.failures[0].status, Some(500));
    assert_eq!(letter.failures[0].attempts, 3, "1 attempt + max_retries 2");
    assert_eq!(read_records(&bad).len(), 3);
    assert_eq!(read_records(&fine).len(), 1);

    // A non-retryable status is final at once.
    let AckEvent::DeadLetter(letter) = &events["invalid"] else {
        panic!("{events:?}")
    };
    assert_eq!(letter.failures[0].status, Some(400));
    assert_eq!(letter.failures[0].attempts, 1);
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn retry_after_is_obeyed() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = record_file(&dir, "limited");
    gw.deploy_ok(recorder_function(
        "limited",
        "jobs",
        &f,
        &[
            ("FAIL_FIRST", "1"),
            ("FAIL_STATUS", "429"),
            ("RETRY_AFTER", "1"),
        ],
    ))
    .await;
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    // Backoff alone would wait at most 300 ms; Retry-After asks for 1 s (below max_retry_wait).
    let config = gw
        .connector_config()
        .max_retry_wait(Duration::from_secs(5))
        .initial_retry_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    let runtime = tokio::spawn(run(config, source, cancel.clone()));
    feed.send("jobs", "polite").await;
    let events = feed.events(1, Duration::from_secs(20)).await;
    assert_eq!(events[0].1, AckEvent::Ack);
    let r = read_records(&f);
    assert_eq!(r.len(), 2);
    let gap = r[1]["t"].as_f64().unwrap() - r[0]["t"].as_f64().unwrap();
    assert!(
        gap >= 0.95,
        "second attempt came {gap:.3}s after the first; Retry-After asked for 1s"
    );
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn order_per_key_is_kept_under_concurrency() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = record_file(&dir, "ordered");
    gw.deploy_ok(recorder_function(
        "ordered",
        "events",
        &f,
        &[("DELAY_MS_MAX", "15")],
    ))
    .await;
    let (source, mut feed) = channel_source(DeliveryOrder::PerKey);
    let cancel = CancellationToken::new();
    let runtime = tokio::spawn(run(
        gw.connector_config().max_inflight(16usize).build().unwrap(),
        source,
        cancel.clone(),
    ));
    let (keys, per_key) = (4, 15);
    for i in 0..per_key {
        for k in 0..keys {
            let m = feed
                .message("events", &format!("k{k}-{i:02}"))
                .with_key(format!("k{k}"));
            feed.tx.send(m).await.unwrap();
        }
    }
    let events = feed.events(keys * per_key, Duration::from_secs(60)).await;
    assert!(events.iter().all(|(_, e)| *e == AckEvent::Ack));
    let records = read_records(&f);
    assert_eq!(records.len(), keys * per_key);
    for k in 0..keys {
        let seq: Vec<String> = records
            .iter()
            .map(|r| r["body"].as_str().unwrap().to_owned())
            .filter(|b| b.starts_with(&format!("k{k}-")))
            .collect();
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(seq, sorted, "key k{k} delivered out of order");
    }
    let max_concurrency = records
        .iter()
        .map(|r| r["inflight"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(
        max_concurrency > 1,
        "different keys should run concurrently"
    );
    assert!(
        max_concurrency <= keys as i64,
        "one message per key at a time: {max_concurrency}"
    );
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn messages_without_subscribers_are_acked_and_counted() {
    let gw = GatewayProcess::start().await;
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let connector = Connector::new(gw.connector_config().build().unwrap());
    let metrics = connector.metrics().clone();
    let runtime = tokio::spawn(connector.run(source, cancel.clone()));
    feed.send("nobody-listens", "x").await;
    feed.send("nobody-listens", "y").await;
    let events = feed.events(2, Duration::from_secs(10)).await;
    assert!(events.iter().all(|(_, e)| *e == AckEvent::Ack));
    let text = metrics.render();
    assert!(
        text.contains(r#"connector_messages_unrouted_total{topic="nobody-listens"} 2"#),
        "{text}"
    );
    assert!(text.contains("connector_inflight_messages 0"), "{text}");
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

/// A stack file with the recorder subscribed to `topic`, as `tributary up` would run it.
fn recorder_stack(
    dir: &tempfile::TempDir,
    topic: &str,
    record_file: &std::path::Path,
) -> std::path::PathBuf {
    let script = tributary_tests::recorder_script();
    let stack = dir.path().join("stack.yml");
    std::fs::write(
        &stack,
        format!(
            "functions:\n  steady:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      RECORD_FILE: {}\n    annotations:\n      topic: {topic}\n",
            script.display(),
            record_file.display()
        ),
    )
    .unwrap();
    stack
}

#[tokio::test]
async fn keeps_running_while_the_gateway_is_down_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let f = record_file(&dir, "steady");
    let stack = recorder_stack(&dir, "steady", &f);
    let port = tributary_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    // One state directory for both gateways: the restarted one keeps its credentials.
    let state = dir.path().join("state");
    let up = || {
        GatewayOptions::default()
            .port(port)
            .stack(&stack)
            .arg("--no-cron")
            .state_dir(&state)
    };

    // Started before the gateway exists: it waits for a topic map and takes no message (its
    // credentials are read from the gateway's state once they exist).
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let config = test_config(&base)
        .basic_auth(true)
        .secret_mount_path(state.join("credentials"))
        .max_retries(60u32)
        .max_retry_wait(Duration::from_millis(250))
        .build()
        .unwrap();
    let connector = Connector::new(config);
    let metrics = connector.metrics().clone();
    let runtime = tokio::spawn(connector.run(source, cancel.clone()));
    feed.send("steady", "before-gateway").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        feed.acks.try_recv().is_err(),
        "nothing may be acked without a topic map"
    );
    assert!(!runtime.is_finished());

    let mut gw = GatewayProcess::start_with(up()).await;
    let events = feed.events(1, Duration::from_secs(20)).await;
    assert_eq!(events[0], ("before-gateway".to_owned(), AckEvent::Ack));

    // The gateway goes away: messages are retried, the last topic map is kept.
    gw.terminate(Duration::from_secs(10));
    drop(gw);
    feed.send("steady", "while-down").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(feed.acks.try_recv().is_err());
    assert!(
        !metrics
            .render()
            .contains("connector_topic_map_rebuild_errors_total 0"),
        "rebuilds failed while the gateway was down"
    );

    // It comes back (new processes, same port): the pending message goes through.
    let gw = GatewayProcess::start_with(up()).await;
    let events = feed.events(1, Duration::from_secs(30)).await;
    assert_eq!(
        events[0],
        ("while-down".to_owned(), AckEvent::Ack),
        "{}",
        gw.logs()
    );
    let bodies: Vec<String> = read_records(&f)
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, ["before-gateway", "while-down"]);
    assert!(!runtime.is_finished());
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_loses_nothing() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = record_file(&dir, "slow");
    gw.deploy_ok(recorder_function(
        "slow",
        "work",
        &f,
        &[("DELAY_MS", "150")],
    ))
    .await;
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let connector = Connector::new(gw.connector_config().max_inflight(6usize).build().unwrap());
    let metrics = connector.metrics().clone();
    let runtime = tokio::spawn(connector.run(source, cancel.clone()));
    for i in 0..40 {
        feed.send("work", &format!("w{i:02}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    runtime.await.unwrap().unwrap();

    // Every message gets exactly one final word, also those the runtime never took: they are
    // nacked when the source drops them unsent.
    let mut outcome: HashMap<String, AckEvent> = HashMap::new();
    for (id, e) in feed.events(40, Duration::from_secs(10)).await {
        assert!(
            outcome.insert(id.clone(), e).is_none(),
            "{id} acknowledged twice"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.acks.recv())
            .await
            .is_err(),
        "one acknowledgement per message"
    );
    let delivered: Vec<String> = read_records(&f)
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    let acked: Vec<&String> = outcome
        .iter()
        .filter(|(_, e)| **e == AckEvent::Ack)
        .map(|(id, _)| id)
        .collect();
    assert!(!acked.is_empty(), "some messages finished before shutdown");
    for id in &acked {
        assert!(delivered.contains(id), "{id} was acked but never delivered");
    }
    assert!(
        outcome
            .values()
            .all(|e| matches!(e, AckEvent::Ack | AckEvent::Nack)),
        "{outcome:?}"
    );
    // Every message the runtime took got exactly one final word: acked after delivery, or
    // handed back for redelivery. The others (a send refused at shutdown, messages never taken
    // from the source) were nacked without reaching the runtime.
    let text = metrics.render();
    let received = metric_value(&text, r#"connector_messages_received_total{topic="work"}"#);
    let acked_metric = metric_value(&text, r#"connector_messages_acked_total{topic="work"}"#);
    let nacked_metric = metric_value(&text, r#"connector_messages_nacked_total{topic="work"}"#);
    assert_eq!(acked_metric, acked.len() as f64, "{text}");
    assert_eq!(received, acked_metric + nacked_metric, "{text}");
    let nack_events = outcome.values().filter(|e| **e == AckEvent::Nack).count() as f64;
    assert_eq!(
        nack_events,
        nacked_metric + (40.0 - received),
        "{outcome:?}"
    );
    assert!(
        received >= 6.0,
        "the runtime had taken up to max_inflight messages: {received}"
    );
    assert!(received < 40.0, "shutdown stopped taking messages");
    assert!(text.contains("connector_inflight_messages 0"), "{text}");
}

#[tokio::test]
async fn basic_auth_credentials_are_sent_to_the_gateway() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("basic-auth-user"), "admin").unwrap();
    std::fs::write(secrets.path().join("basic-auth-password"), "pw").unwrap();
    let secret_path = secrets.path().to_str().unwrap();
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .env("basic_auth", "true")
            .env("secret_mount_path", secret_path),
    )
    .await;
    let r = gw
        .http
        .post(gw.url("/system/functions"))
        .basic_auth("admin", Some("pw"))
        .json(&json!({"service": "cat", "envProcess": "cat", "annotations": {"topic": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Without credentials the controller reports 401 clearly.
    let config = gw.connector_config().build().unwrap();
    let err = TopicMapSync::new(&config, ConnectorMetrics::new())
        .unwrap()
        .sync()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("401") && err.to_string().contains("basic_auth"),
        "{err}"
    );

    let config = gw
        .connector_config()
        .basic_auth(true)
        .secret_mount_path(secrets.path().to_owned())
        .build()
        .unwrap();
    let map = TopicMapSync::new(&config, ConnectorMetrics::new())
        .unwrap()
        .sync()
        .await
        .unwrap();
    assert_eq!(map.functions_for("t"), ["cat"]);
}

#[tokio::test]
async fn metrics_are_served_on_the_metrics_port() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(tributary_tests::echo_function("echo")).await;
    let mut d = tributary_tests::echo_function("echo2");
    d["annotations"] = json!({"topic": "pings"});
    gw.deploy_ok(d).await;
    let port = tributary_tests::free_port();
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let runtime = tokio::spawn(run(
        gw.connector_config().metrics_port(port).build().unwrap(),
        source,
        cancel.clone(),
    ));
    feed.send("pings", "1").await;
    feed.events(1, Duration::from_secs(10)).await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    for needle in [
        r#"connector_messages_received_total{topic="pings"} 1"#,
        r#"connector_messages_acked_total{topic="pings"} 1"#,
        r#"connector_invocations_total{code="200",function="echo2"} 1"#,
        "connector_invocation_seconds_bucket",
        "connector_topic_map_size 1",
        "connector_topic_map_last_rebuild_timestamp_seconds",
        "connector_inflight_messages 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn asynchronous_invocation_goes_through_the_gateway_queue() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .arg("--queue-path")
            .arg(dir.path().join("q.db").to_str().unwrap()),
    )
    .await;
    let f = record_file(&dir, "later");
    gw.deploy_ok(recorder_function("later", "jobs", &f, &[]))
        .await;
    let (source, mut feed) = channel_source(DeliveryOrder::Unordered);
    let cancel = CancellationToken::new();
    let config = gw
        .connector_config()
        .asynchronous_invocation(true)
        .build()
        .unwrap();
    let runtime = tokio::spawn(run(config, source, cancel.clone()));
    for i in 0..3 {
        feed.send("jobs", &format!("async-{i}")).await;
    }
    // Acked once the gateway accepted them (202): delivery is now the queue's job.
    let events = feed.events(3, Duration::from_secs(20)).await;
    assert!(
        events.iter().all(|(_, e)| *e == AckEvent::Ack),
        "{events:?}"
    );
    tributary_tests::eventually(
        Duration::from_secs(20),
        "the queue worker invoked all three",
        || async { read_records(&f).len() == 3 },
    )
    .await;
    let r = &read_records(&f)[0];
    assert_eq!(r["headers"]["x-topic"], "jobs");
    assert_eq!(r["headers"]["x-connector"], "test-connector");
    assert!(r["headers"]["x-call-id"].as_str().is_some());
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_taken_metrics_port_is_a_clear_error() {
    let gw = GatewayProcess::start().await;
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (source, _feed) = channel_source(DeliveryOrder::Unordered);
    let config = gw.connector_config().metrics_port(port).build().unwrap();
    let err = run(config, source, CancellationToken::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&port.to_string()) && msg.contains("metrics_port"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_panicking_response_subscriber_nacks_its_message_and_the_connector_goes_on() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = record_file(&dir, "steady");
    gw.deploy_ok(recorder_function(
        "steady",
        "events",
        &f,
        &[("DELAY_MS", "10")],
    ))
    .await;
    let (source, mut feed) = channel_source(DeliveryOrder::PerKey);
    let cancel = CancellationToken::new();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    // User code with a bug: every 10th outcome it sees, it panics.
    let connector = Connector::new(gw.connector_config().max_inflight(8usize).build().unwrap())
        .with_subscriber(move |_: &InvocationOutcome| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 10 == 9 {
                panic!("a response subscriber bug (on purpose, in a test)");
            }
        });
    let metrics = connector.metrics().clone();
    let runtime = tokio::spawn(connector.run(source, cancel.clone()));
    // Four keys: a panic that stranded its key would stop every later message of that key;
    // one that kept its permit would, after 8 panics, stop everything (max_inflight 8).
    let n = 200;
    for i in 0..n {
        let m = feed
            .redelivered("events", &format!("m{i:03}"))
            .with_key(format!("k{}", i % 4));
        feed.tx.send(m).await.unwrap();
    }
    let mut acked = std::collections::HashSet::new();
    let mut nacks: HashMap<String, usize> = HashMap::new();
    while acked.len() < n {
        let (id, event) = tokio::time::timeout(Duration::from_secs(60), feed.acks.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {n} acks", acked.len()))
            .unwrap();
        match event {
            AckEvent::Ack => assert!(acked.insert(id.clone()), "{id} acked twice"),
            AckEvent::Nack => *nacks.entry(id).or_default() += 1,
            AckEvent::DeadLetter(l) => panic!("nothing fails here: {l}"),
        }
    }
    // Each panic nacked exactly its own message, which came back and was delivered again.
    let panics = calls.load(std::sync::atomic::Ordering::SeqCst) / 10;
    assert!(panics >= n / 10, "{panics} panics");
    assert_eq!(nacks.values().sum::<usize>(), panics);
    let deliveries = read_records(&f);
    for i in 0..n {
        let id = format!("m{i:03}");
        let times = deliveries.iter().filter(|r| r["body"] == id).count();
        assert_eq!(
            times,
            1 + nacks.get(&id).copied().unwrap_or(0),
            "{id}: delivered once, plus once per nack"
        );
    }
    assert!(!runtime.is_finished(), "the connector keeps running");
    let text = metrics.render();
    assert!(text.contains("connector_inflight_messages 0"), "{text}");
    assert_eq!(
        metric_value(&text, r#"connector_messages_nacked_total{topic="events"}"#),
        panics as f64
    );
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}
