//! The Kafka connector as a real process against a real Kafka-compatible broker (tansu) and a
//! real gateway, with topics of 3 partitions.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use tributary_tests::kafka::KafkaBroker;
use tributary_tests::{
    ConnectorProcess, GatewayProcess, eventually, free_port, kill_mid_stream_and_restart,
    metric_value, process_alive, read_records, record_bodies, record_header, recorder_function,
};

fn start_connector(
    gw: &GatewayProcess,
    kafka: &KafkaBroker,
    extra: &[(&str, &str)],
) -> ConnectorProcess {
    let base = kafka.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("rebuild_interval", "500ms"));
    env.push(("initial_retry_wait", "50ms"));
    env.push(("max_retry_wait", "200ms"));
    env.extend_from_slice(extra);
    ConnectorProcess::start("kafka", gw, &env)
}

/// Offsets each partition's records arrived in.
fn offsets_by_partition(records: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in records {
        out.entry(record_header(r, "x-kafka-partition").to_owned())
            .or_default()
            .push(record_header(r, "x-kafka-offset").parse().unwrap());
    }
    out
}

#[tokio::test]
async fn fans_out_follows_annotated_topics_and_passes_kafka_headers() {
    let kafka = KafkaBroker::start();
    kafka.create_topic("orders", 3);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(format!("{n}.jsonl"));
    gw.deploy_ok(recorder_function("a", "orders", &file("a"), &[]))
        .await;
    gw.deploy_ok(recorder_function("b", "orders", &file("b"), &[]))
        .await;
    // No `topics`: the connector subscribes to what the functions' annotations name.
    let connector = start_connector(&gw, &kafka, &[]);
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(40))
        .await;

    let producer = kafka.producer();
    kafka
        .produce(
            &producer,
            "orders",
            Some(1),
            Some(b"customer-7"),
            "order-1",
            &[("trace", b"abc"), ("bin", &[0xff, 0x00])],
        )
        .await;
    kafka
        .produce(
            &producer,
            "orders",
            Some(2),
            Some(&[0xde, 0xad]),
            "order-2",
            &[],
        )
        .await;
    kafka
        .produce(&producer, "orders", Some(0), None, "order-3", &[])
        .await;
    eventually(
        Duration::from_secs(30),
        "both functions get all 3",
        || async { read_records(&file("a")).len() == 3 && read_records(&file("b")).len() == 3 },
    )
    .await;
    for f in ["a", "b"] {
        let records = read_records(&file(f));
        let by_body: BTreeMap<&str, &Value> = records
            .iter()
            .map(|r| (r["body"].as_str().unwrap(), r))
            .collect();
        let r1 = by_body["order-1"];
        assert_eq!(record_header(r1, "x-topic"), "orders");
        assert_eq!(record_header(r1, "x-connector"), "kafka-connector");
        assert_eq!(record_header(r1, "x-kafka-partition"), "1");
        assert_eq!(record_header(r1, "x-kafka-offset"), "0");
        assert_eq!(record_header(r1, "x-kafka-key"), "customer-7");
        assert_eq!(record_header(r1, "x-kafka-key-enc"), "");
        assert_eq!(record_header(r1, "x-kafka-trace"), "abc");
        assert_eq!(
            record_header(r1, "x-kafka-bin"),
            "/wA=",
            "binary header values are base64"
        );
        assert_eq!(record_header(r1, "content-type"), "text/plain");
        let ts: i64 = record_header(r1, "x-kafka-timestamp").parse().unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        assert!((now - ts).abs() < 120_000, "timestamp {ts} is in ms");
        let r2 = by_body["order-2"];
        assert_eq!(record_header(r2, "x-kafka-key"), "3q0=");
        assert_eq!(record_header(r2, "x-kafka-key-enc"), "b64");
        assert_eq!(record_header(by_body["order-3"], "x-kafka-key"), "");
    }

    // A new function on a new topic: the connector follows the annotation.
    kafka.create_topic("invoices", 3);
    gw.deploy_ok(recorder_function("c", "invoices", &file("c"), &[]))
        .await;
    eventually(
        Duration::from_secs(30),
        "subscribed to invoices",
        || async {
            connector.logs().contains("orders,invoices")
                || connector.logs().contains("invoices,orders")
        },
    )
    .await;
    // The group rebalances onto the new subscription; records produced meanwhile still arrive.
    kafka.produce_many("invoices", 3, "inv", 6).await;
    eventually(Duration::from_secs(40), "invoices delivered", || async {
        read_records(&file("c")).len() == 6
    })
    .await;

    let metrics = connector.metrics().await;
    let consumed: f64 = (0..3)
        .map(|p| {
            metric_value(
                &metrics,
                &format!("kafka_messages_consumed_total{{partition=\"{p}\",topic=\"orders\"}}"),
            )
        })
        .sum();
    assert_eq!(consumed, 3.0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "kafka_committed_offset{partition=\"1\",topic=\"orders\"}"
        ),
        1.0
    );
    eventually(Duration::from_secs(10), "lag of 0 reported", || async {
        let m = connector.metrics().await;
        m.contains("kafka_consumer_lag{partition=\"1\",topic=\"orders\"} 0")
    })
    .await;
}

#[tokio::test]
async fn keeps_order_per_partition_with_many_in_flight() {
    let kafka = KafkaBroker::start();
    kafka.create_topic("seq", 3);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seq.jsonl");
    gw.deploy_ok(recorder_function(
        "seq",
        "seq",
        &file,
        &[("DELAY_MS_MAX", "15")],
    ))
    .await;
    kafka.produce_many("seq", 3, "m", 150).await;
    let connector = start_connector(&gw, &kafka, &[("topics", "seq"), ("max_inflight", "16")]);
    eventually(Duration::from_secs(60), "150 delivered", || async {
        read_records(&file).len() >= 150
    })
    .await;
    let records = read_records(&file);
    let by_partition = offsets_by_partition(&records);
    assert_eq!(by_partition.len(), 3);
    for (p, offsets) in &by_partition {
        let expected: Vec<i64> = (0..50).collect();
        assert_eq!(offsets, &expected, "partition {p} out of order");
    }
    // Partitions ran concurrently: some request saw another in flight.
    let max_inflight = records
        .iter()
        .map(|r| r["inflight"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(max_inflight >= 2, "partitions never overlapped");
    assert!(
        max_inflight <= 3,
        "more than one message per partition at once"
    );
    drop(connector);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_then_succeeds_and_dead_letters_with_headers() {
    let kafka = KafkaBroker::start();
    kafka.create_topic("jobs", 3);
    kafka.create_topic("jobs-dlt", 1);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(format!("{n}.jsonl"));
    gw.deploy_ok(recorder_function(
        "flaky",
        "jobs",
        &file("flaky"),
        &[("FAIL_FIRST", "2")],
    ))
    .await;
    gw.deploy_ok(recorder_function(
        "broken",
        "jobs",
        &file("broken"),
        &[("ALWAYS_STATUS", "500")],
    ))
    .await;
    let connector = start_connector(
        &gw,
        &kafka,
        &[
            ("topics", "jobs"),
            ("max_retries", "2"),
            ("dead_letter_topic", "jobs-dlt"),
        ],
    );
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(40))
        .await;
    let producer = kafka.producer();
    kafka
        .produce(
            &producer,
            "jobs",
            Some(2),
            Some(b"k1"),
            "job-1",
            &[("origin", b"test")],
        )
        .await;

    let letters =
        tokio::task::block_in_place(|| kafka.read("jobs-dlt", 1, Duration::from_secs(40)));
    assert_eq!(letters.len(), 1, "{}", connector.logs());
    let l = &letters[0];
    assert_eq!(l.payload, "job-1");
    assert_eq!(l.key.as_deref(), Some(&b"k1"[..]));
    let h: BTreeMap<&str, &str> = l
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(h["origin"], "test", "original headers are kept");
    assert_eq!(h["x-dead-letter-function"], "broken");
    assert_eq!(h["x-dead-letter-status"], "500");
    assert_eq!(h["x-dead-letter-attempts"], "3");
    assert!(h["x-dead-letter-error"].contains("500"), "{h:?}");
    assert_eq!(h["x-original-topic"], "jobs");
    assert_eq!(h["x-original-partition"], "2");
    assert_eq!(h["x-original-offset"], "0");

    // The flaky function failed twice, then succeeded on the third attempt.
    let flaky = read_records(&file("flaky"));
    let statuses: Vec<u64> = flaky
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert_eq!(read_records(&file("broken")).len(), 3);
    // Dead-lettered counts as final: the offset is committed past it.
    eventually(
        Duration::from_secs(10),
        "offset committed past the dead letter",
        || async {
            metric_value(
                &connector.metrics().await,
                "kafka_committed_offset{partition=\"2\",topic=\"jobs\"}",
            ) == 1.0
        },
    )
    .await;
    let m = connector.metrics().await;
    assert_eq!(
        metric_value(&m, "kafka_dead_letters_produced_total{topic=\"jobs-dlt\"}"),
        1.0
    );
}

#[tokio::test]
async fn without_a_dead_letter_topic_a_failing_message_holds_its_partition() {
    let kafka = KafkaBroker::start();
    kafka.create_topic("hold", 3);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hold.jsonl");
    // Each body fails its first 5 attempts; with max_retries=1 the runtime gives up after 2,
    // and without a dead-letter topic it must hold the message and try again, not skip it.
    gw.deploy_ok(recorder_function(
        "hold",
        "hold",
        &file,
        &[("FAIL_FIRST", "5")],
    ))
    .await;
    let connector = start_connector(&gw, &kafka, &[("topics", "hold"), ("max_retries", "1")]);
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(40))
        .await;
    let producer = kafka.producer();
    for i in 0..3 {
        kafka
            .produce(&producer, "hold", Some(0), None, &format!("h-{i}"), &[])
            .await;
    }
    eventually(Duration::from_secs(60), "all three delivered", || async {
        read_records(&file)
            .iter()
            .filter(|r| r["status"] == 200)
            .count()
            == 3
    })
    .await;
    let records = read_records(&file);
    // Strictly one message at a time: h-1 is first tried only after h-0 succeeded.
    let order: Vec<(String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["body"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let first_h1 = order.iter().position(|(b, _)| b == "h-1").unwrap();
    let h0_ok = order
        .iter()
        .position(|(b, s)| b == "h-0" && *s == 200)
        .unwrap();
    assert!(h0_ok < first_h1, "{order:?}");
    assert_eq!(order.iter().filter(|(b, _)| b == "h-0").count(), 6);
    assert!(
        connector
            .logs()
            .contains("there is no dead-letter destination")
    );
}

#[tokio::test]
async fn sigkill_mid_stream_then_restart_delivers_everything() {
    const N: usize = 5000;
    const MAX_INFLIGHT: usize = 16;
    let kafka = KafkaBroker::start();
    kafka.create_topic("stream", 3);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.jsonl");
    gw.deploy_ok(recorder_function("count", "stream", &file, &[]))
        .await;
    kafka.produce_many("stream", 3, "s", N).await;
    let inflight = MAX_INFLIGHT.to_string();
    let env = [
        ("topics", "stream"),
        ("order", "none"),
        ("max_inflight", inflight.as_str()),
        ("print_response", "false"),
    ];
    let (at_kill, duplicates, second) =
        kill_mid_stream_and_restart(|| start_connector(&gw, &kafka, &env), &file, N).await;
    // Redelivered: what was in flight at the kill, plus what finished in the last commit
    // interval (a few ms) before it.
    assert!(
        duplicates <= 2 * MAX_INFLIGHT,
        "{duplicates} duplicates (killed at {at_kill})"
    );
    drop(second);
}

#[tokio::test]
async fn two_connectors_in_one_group_share_partitions() {
    const N: usize = 600;
    let kafka = KafkaBroker::start();
    kafka.create_topic("shared", 3);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.jsonl");
    gw.deploy_ok(recorder_function("shared", "shared", &file, &[]))
        .await;
    let env = [
        ("topics", "shared"),
        ("group", "pair"),
        ("print_response", "false"),
    ];
    let a = start_connector(&gw, &kafka, &env);
    a.wait_for_log("partitions assigned", Duration::from_secs(40))
        .await;
    let b = start_connector(&gw, &kafka, &env);
    b.wait_for_log("partitions assigned", Duration::from_secs(60))
        .await;
    // Settled: together the two own all three partitions, each at least one.
    eventually(
        Duration::from_secs(60),
        "a rebalance that splits the partitions",
        || async {
            let (la, lb) = (a.logs(), b.logs());
            la.contains("partitions revoked") && assigned_last(&la) + assigned_last(&lb) == 3
        },
    )
    .await;
    kafka.produce_many("shared", 3, "p", N).await;
    eventually(Duration::from_secs(60), "everything delivered", || async {
        record_bodies(&file)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == N
    })
    .await;
    let consumed = |m: &str| -> f64 {
        (0..3)
            .map(|p| {
                metric_value(
                    m,
                    &format!("kafka_messages_consumed_total{{partition=\"{p}\",topic=\"shared\"}}"),
                )
            })
            .sum()
    };
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert!(consumed(&ma) > 0.0 && consumed(&mb) > 0.0, "both consumed");
    assert_eq!(
        record_bodies(&file).len(),
        N,
        "exactly once when no one fails"
    );
}

/// How many partitions the last "partitions assigned" line of a log names.
fn assigned_last(log: &str) -> usize {
    log.lines()
        .rev()
        .find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))
        .filter(|l| l.contains("partitions assigned"))
        .map(|l| l.matches('[').count())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_and_retried_until_it_comes_up() {
    let port = free_port();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late.jsonl");
    gw.deploy_ok(recorder_function("late", "late", &file, &[]))
        .await;
    let bootstrap = format!("127.0.0.1:{port}");
    let connector = ConnectorProcess::start(
        "kafka",
        &gw,
        &[
            ("broker_hosts", bootstrap.as_str()),
            ("topics", "late"),
            (
                "kafka_options",
                "session.timeout.ms=6000,heartbeat.interval.ms=500,reconnect.backoff.max.ms=500",
            ),
        ],
    );
    connector
        .wait_for_log(
            "cannot reach the Kafka brokers (broker_hosts); retrying",
            Duration::from_secs(30),
        )
        .await;
    assert!(connector.logs().contains(&bootstrap));
    assert!(
        process_alive(connector.pid()),
        "the connector keeps retrying"
    );

    let kafka = KafkaBroker::start_on(port, &[]);
    kafka.create_topic("late", 3);
    connector
        .wait_for_log("connected to Kafka", Duration::from_secs(60))
        .await;
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(60))
        .await;
    kafka.produce_many("late", 3, "l", 3).await;
    eventually(
        Duration::from_secs(30),
        "delivered once the broker is up",
        || async { read_records(&file).len() == 3 },
    )
    .await;
}

#[tokio::test]
async fn bad_settings_exit_with_a_clear_error() {
    // A value that does not parse is a usage error (2); settings that parse but do not work
    // together fail at start (1).
    for (env, needle, code) in [
        (("initial_offset", "middle"), "initial_offset must be", 2),
        (("broker_hosts", "no-port"), "has no port", 1),
        (("sasl_mechanism", "GSSAPI"), "sasl_mechanism must be", 2),
        (("kafka_options", "nonsense"), "not `key=value`", 2),
    ] {
        let out = std::process::Command::new(tributary_tests::tributary_bin())
            .args(["connector", "kafka"])
            .env(env.0, env.1)
            .env(
                "broker_hosts",
                if env.0 == "broker_hosts" {
                    env.1
                } else {
                    "127.0.0.1:9"
                },
            )
            .env("metrics_port", "0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_back_message_is_read_again_and_commits_go_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_util::sync::CancellationToken;
    use tributary_connector_sdk::{Connector, InvocationOutcome};
    use tributary_kafka::{KafkaConfig, KafkaSource};

    let kafka = KafkaBroker::start();
    kafka.create_topic("rewind", 3);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rewind.jsonl");
    gw.deploy_ok(recorder_function("rewound", "rewind", &file, &[]))
        .await;
    let n = 60;
    kafka.produce_many("rewind", 3, "r", n).await;
    let env = kafka.connector_env();
    let config: KafkaConfig = tributary_core::settings::from_lookup(|k| {
        env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    let config = KafkaConfig {
        topics: vec!["rewind".into()],
        ..config
    };
    // User code that panics on every 10th outcome: each time, its message is handed back.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let connector = Connector::new(gw.connector_config().max_inflight(8usize).build().unwrap())
        .with_subscriber(move |_: &InvocationOutcome| {
            if counter.fetch_add(1, Ordering::SeqCst) % 10 == 9 {
                panic!("a response subscriber bug (on purpose, in a test)");
            }
        });
    let metrics = connector.metrics().clone();
    let cancel = CancellationToken::new();
    let runtime = tokio::spawn(connector.run(KafkaSource::new(config).unwrap(), cancel.clone()));
    eventually(
        Duration::from_secs(120),
        "every record delivered",
        || async {
            record_bodies(&file)
                .into_iter()
                .collect::<BTreeSet<_>>()
                .len()
                == n
        },
    )
    .await;
    // The handed-back offsets did not stay unfinished: every partition commits to its end.
    eventually(
        Duration::from_secs(30),
        "every partition committed to its end",
        || async {
            let text = metrics.render();
            (0..3).all(|p| {
                metric_value(
                    &text,
                    &format!("kafka_committed_offset{{partition=\"{p}\",topic=\"rewind\"}}"),
                ) == (n / 3) as f64
            })
        },
    )
    .await;
    let panics = calls.load(Ordering::SeqCst) / 10;
    assert!(panics >= n / 10, "{panics} panics");
    assert!(
        record_bodies(&file).len() > n,
        "handed-back records were read again"
    );
    assert!(!runtime.is_finished(), "the connector keeps running");
    cancel.cancel();
    runtime.await.unwrap().unwrap();
}
