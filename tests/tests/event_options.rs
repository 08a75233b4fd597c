//! Per-function options from annotations, against the real brokers: filters
//! (`com.tributary.filter`) on payload and headers, CloudEvents binary mode
//! (`com.tributary.cloudevents`) mapped from each source, and the `Idempotency-Key` every
//! invocation carries, equal on a redelivery after a connector's SIGKILL.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::kafka::KafkaBroker;
use tributary_tests::sqs::MotoServer;
use tributary_tests::{
    ConnectorProcess, GatewayProcess, NatsServer, eventually, js_publish, metric_value,
    read_records, record_bodies, record_header, recorder_function,
};

fn with_annotation(mut d: Value, key: &str, value: &str) -> Value {
    d["annotations"][key] = json!(value);
    d
}

fn kafka_connector(gw: &GatewayProcess, kafka: &KafkaBroker, topics: &str) -> ConnectorProcess {
    let base = kafka.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("topics", topics),
        ("rebuild_interval", "500ms"),
        ("initial_retry_wait", "50ms"),
    ]);
    ConnectorProcess::start("kafka", gw, &env)
}

async fn wait_records(file: &std::path::Path, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(40), &format!("{n} records"), || async {
        read_records(file).len() >= n
    })
    .await;
    read_records(file)
}

#[tokio::test]
async fn kafka_filters_on_payload_and_headers_and_cloudevents_in_binary_mode() {
    let kafka = KafkaBroker::start();
    kafka.create_topic("orders", 1);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(format!("{n}.jsonl"));
    let filter = "com.tributary.filter";
    gw.deploy_ok(recorder_function("all", "orders", &file("all"), &[]))
        .await;
    for (name, pattern) in [
        (
            "big",
            r#"{"type": ["order"], "amount": [{"numeric": [">", 100]}]}"#,
        ),
        (
            "eu",
            r#"{"headers": {"x-kafka-region": [{"prefix": "eu-"}]}}"#,
        ),
        ("broken", r#"{"type": "order"}"#),
    ] {
        let d = recorder_function(name, "orders", &file(name), &[]);
        gw.deploy_ok(with_annotation(d, filter, pattern)).await;
    }
    let d = recorder_function("ce", "orders", &file("ce"), &[]);
    gw.deploy_ok(with_annotation(d, "com.tributary.cloudevents", "binary"))
        .await;
    let connector = kafka_connector(&gw, &kafka, "orders");
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(40))
        .await;
    let producer = kafka.producer();
    let structured = r#"{"specversion":"1.0","id":"evt-7","source":"/shop","type":"order.paid","subject":"o-7","datacontenttype":"application/json","data":{"amount":7}}"#;
    for (payload, headers) in [
        (
            r#"{"type": "order", "amount": 150}"#,
            vec![("region", b"eu-west".as_slice())],
        ),
        (
            r#"{"type": "order", "amount": 50}"#,
            vec![("region", b"eu-north".as_slice())],
        ),
        ("plain text", vec![("region", b"us-east".as_slice())]),
        (
            structured,
            vec![("content-type", b"application/cloudevents+json".as_slice())],
        ),
    ] {
        kafka
            .produce(&producer, "orders", Some(0), None, payload, &headers)
            .await;
    }
    let all = wait_records(&file("all"), 4).await;
    let ce = wait_records(&file("ce"), 4).await;
    eventually(
        Duration::from_secs(20),
        "every message acknowledged",
        || async {
            metric_value(
                &connector.metrics().await,
                r#"connector_messages_acked_total{topic="orders"}"#,
            ) == 4.0
        },
    )
    .await;
    assert_eq!(
        record_bodies(&file("big")),
        [r#"{"type": "order", "amount": 150}"#]
    );
    assert_eq!(
        record_bodies(&file("eu")),
        [
            r#"{"type": "order", "amount": 150}"#,
            r#"{"type": "order", "amount": 50}"#
        ]
    );
    assert!(
        read_records(&file("broken")).is_empty(),
        "a bad pattern lets nothing through"
    );
    let metrics = connector.metrics().await;
    for (function, n) in [("big", 3.0), ("eu", 2.0), ("broken", 4.0), ("all", 0.0)] {
        let series =
            format!(r#"connector_messages_filtered_total{{function="{function}",topic="orders"}}"#);
        assert_eq!(metric_value(&metrics, &series), n, "{series}\n{metrics}");
    }
    let logs = connector.logs();
    assert_eq!(
        logs.matches("the function's filter is invalid").count(),
        1,
        "reported once:\n{logs}"
    );
    assert!(logs.contains("$.type"), "{logs}");

    // Every call carries the message's key: topic, partition, offset.
    for r in &all {
        let key = format!("kafka:orders:0:{}", record_header(r, "x-kafka-offset"));
        assert_eq!(record_header(r, "idempotency-key"), key);
        assert!(
            record_header(r, "ce-id").is_empty(),
            "no CloudEvents without the annotation"
        );
    }
    for r in &ce[..3] {
        let offset = record_header(r, "x-kafka-offset");
        assert_eq!(record_header(r, "ce-specversion"), "1.0");
        assert_eq!(
            record_header(r, "ce-id"),
            format!("kafka:orders:0:{offset}")
        );
        assert_eq!(record_header(r, "ce-source"), "/kafka/orders");
        assert_eq!(record_header(r, "ce-type"), "com.tributary.kafka.message");
        assert_eq!(record_header(r, "ce-subject"), format!("0/{offset}"));
        assert!(record_header(r, "ce-time").ends_with('Z'), "{r}");
    }
    // The structured event arrives in binary mode with its own attributes and data.
    let event = &ce[3];
    assert_eq!(event["body"], r#"{"amount":7}"#);
    assert_eq!(record_header(event, "ce-id"), "evt-7");
    assert_eq!(record_header(event, "ce-type"), "order.paid");
    assert_eq!(record_header(event, "ce-source"), "/shop");
    assert_eq!(record_header(event, "ce-subject"), "o-7");
    assert_eq!(record_header(event, "content-type"), "application/json");
    assert_eq!(record_header(event, "idempotency-key"), "kafka:orders:0:3");
}

#[tokio::test]
async fn kafka_idempotency_key_is_equal_on_a_redelivery_after_sigkill() {
    let kafka = KafkaBroker::start();
    kafka.create_topic("payments", 1);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pay.jsonl");
    gw.deploy_ok(recorder_function(
        "pay",
        "payments",
        &file,
        &[("DELAY_MS", "1500")],
    ))
    .await;
    let producer = kafka.producer();
    for i in 0..3 {
        kafka
            .produce(&producer, "payments", Some(0), None, &format!("p-{i}"), &[])
            .await;
    }
    let mut first = kafka_connector(&gw, &kafka, "payments");
    // Killed while a call is in flight: its offset is not committed, so it comes again.
    eventually(Duration::from_secs(40), "a call in flight", || async {
        metric_value(
            &gw.metrics().await,
            r#"gateway_function_invocation_inflight{function_name="pay.openfaas-fn"}"#,
        ) >= 1.0
    })
    .await;
    first.kill();
    let _second = kafka_connector(&gw, &kafka, "payments");
    eventually(
        Duration::from_secs(60),
        "every payment delivered after the restart",
        || async {
            let bodies = record_bodies(&file);
            (0..3).all(|i| bodies.iter().any(|b| b == &format!("p-{i}"))) && bodies.len() >= 4
        },
    )
    .await;
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in read_records(&file) {
        keys.entry(r["body"].as_str().unwrap().to_owned())
            .or_default()
            .push(record_header(&r, "idempotency-key").to_owned());
    }
    let redelivered: Vec<_> = keys.iter().filter(|(_, k)| k.len() > 1).collect();
    assert!(
        !redelivered.is_empty(),
        "a message was delivered twice: {keys:?}"
    );
    for (body, ks) in &keys {
        let offset: usize = body.trim_start_matches("p-").parse().unwrap();
        assert!(
            ks.iter()
                .all(|k| *k == format!("kafka:payments:0:{offset}")),
            "{body}: {ks:?}"
        );
    }
}

#[tokio::test]
async fn jetstream_keys_follow_the_stream_sequence_across_retries() {
    let nats = NatsServer::start();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    let d = recorder_function("job", "jobs.>", &file, &[("FAIL_FIRST", "1")]);
    gw.deploy_ok(with_annotation(d, "com.tributary.cloudevents", "binary"))
        .await;
    let js = nats.stream("work", "jobs.>").await;
    for i in 1..=2 {
        js_publish(&js, format!("jobs.j{i}"), format!("job-{i}")).await;
    }
    let _connector =
        nats.jetstream_connector(&gw, "work", "jobs.>", &[("initial_retry_wait", "50ms")]);
    // Each job fails once and is retried: four calls, two per key.
    let records = wait_records(&file, 4).await;
    for r in &records {
        let seq = &r["body"].as_str().unwrap()["job-".len()..];
        assert_eq!(
            record_header(r, "idempotency-key"),
            format!("nats:work:{seq}"),
            "{r}"
        );
        assert_eq!(record_header(r, "ce-id"), format!("nats:work:{seq}"));
        assert_eq!(record_header(r, "ce-source"), "/nats/work");
        assert_eq!(record_header(r, "ce-type"), "com.tributary.nats.message");
        assert_eq!(record_header(r, "ce-subject"), format!("jobs.j{seq}"));
    }
    let retried: Vec<_> = records.iter().filter(|r| r["attempt"] == 2).collect();
    assert_eq!(retried.len(), 2);
    assert!(
        retried
            .iter()
            .all(|r| record_header(r, "x-delivery-attempt") == "2")
    );
}

#[tokio::test]
async fn sqs_messages_carry_their_message_id_as_key_and_ce_id() {
    let sqs = MotoServer::start();
    let queue = sqs.create_queue("invoices").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inv.jsonl");
    let d = recorder_function("inv", "invoices", &file, &[]);
    gw.deploy_ok(with_annotation(d, "com.tributary.cloudevents", "binary"))
        .await;
    let base = sqs.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("queue_url", queue.as_str()),
        ("wait_time", "1s"),
        ("rebuild_interval", "500ms"),
    ]);
    let _connector = ConnectorProcess::start("sqs", &gw, &env);
    sqs.send(&queue, "invoice-1", &[], None).await;
    let r = &wait_records(&file, 1).await[0];
    let id = record_header(r, "x-sqs-message-id");
    assert!(!id.is_empty(), "{r}");
    assert_eq!(record_header(r, "idempotency-key"), format!("sqs:{id}"));
    assert_eq!(record_header(r, "ce-id"), format!("sqs:{id}"));
    assert_eq!(record_header(r, "ce-source"), queue);
    assert_eq!(record_header(r, "ce-type"), "com.tributary.sqs.message");
    assert!(
        record_header(r, "ce-time").ends_with('Z'),
        "SentTimestamp: {r}"
    );
}

#[tokio::test]
async fn cron_firings_and_async_calls_carry_their_keys() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tick.jsonl");
    let mut d = recorder_function("tick", "cron-function", &file, &[]);
    d["annotations"]["schedule"] = json!("*/1 * * * * *");
    gw.deploy_ok(with_annotation(d, "com.tributary.cloudevents", "binary"))
        .await;
    let _cron = ConnectorProcess::start("cron", &gw, &[("rebuild_interval", "500ms")]);
    let records = wait_records(&file, 2).await;
    for r in &records {
        let scheduled = record_header(r, "x-scheduled-time");
        assert_eq!(
            record_header(r, "idempotency-key"),
            format!("cron:tick:{scheduled}")
        );
        assert_eq!(record_header(r, "ce-id"), format!("cron:tick:{scheduled}"));
        assert_eq!(record_header(r, "ce-time"), scheduled);
        assert_eq!(record_header(r, "ce-source"), "/cron/tick");
        assert_eq!(record_header(r, "ce-type"), "com.tributary.cron.fired");
    }
    assert_ne!(
        record_header(&records[0], "idempotency-key"),
        record_header(&records[1], "idempotency-key"),
        "each firing has its own key"
    );

    // An async call's key is its call id, also when the queue retries it.
    let later = dir.path().join("later.jsonl");
    gw.deploy_ok(recorder_function(
        "later",
        "none",
        &later,
        &[("FAIL_FIRST", "1")],
    ))
    .await;
    let r = gw
        .http
        .post(gw.url("/async-function/later"))
        .header("X-Call-Id", "call-42")
        .body("later")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let calls = wait_records(&later, 2).await;
    assert!(
        calls
            .iter()
            .all(|r| record_header(r, "idempotency-key") == "call-42"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn nats_structured_events_and_the_global_cloudevents_setting() {
    let nats = NatsServer::start();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ev.jsonl");
    // No annotation: cloudevents=binary on the connector turns it on for every function.
    gw.deploy_ok(recorder_function("ev", "events.>", &file, &[]))
        .await;
    let _connector = ConnectorProcess::start(
        "nats",
        &gw,
        &[
            ("nats_url", nats.url.as_str()),
            ("topics", "events.>"),
            ("cloudevents", "binary"),
            ("rebuild_interval", "500ms"),
        ],
    );
    let client = async_nats::connect(&nats.url).await.unwrap();
    let structured = r#"{"specversion":"1.0","id":"n-1","source":"/billing","type":"invoice.sent","datacontenttype":"text/plain","data":"invoice 9"}"#;
    eventually(
        Duration::from_secs(20),
        "both messages delivered",
        || async {
            // Core NATS has no backlog: publish until the connector's subscription is up.
            if read_records(&file).is_empty() {
                client
                    .publish("events.billing", structured.into())
                    .await
                    .unwrap();
                client
                    .publish("events.plain", "hello".into())
                    .await
                    .unwrap();
                client.flush().await.unwrap();
            }
            read_records(&file).len() >= 2
        },
    )
    .await;
    let records = read_records(&file);
    let event = records
        .iter()
        .find(|r| record_header(r, "ce-id") == "n-1")
        .unwrap();
    assert_eq!(event["body"], "invoice 9");
    assert_eq!(record_header(event, "ce-type"), "invoice.sent");
    assert_eq!(record_header(event, "ce-source"), "/billing");
    assert_eq!(record_header(event, "content-type"), "text/plain");
    let plain = records.iter().find(|r| r["body"] == "hello").unwrap();
    assert_eq!(record_header(plain, "ce-source"), "/nats");
    assert_eq!(record_header(plain, "ce-subject"), "events.plain");
    assert_eq!(
        record_header(plain, "ce-type"),
        "com.tributary.nats.message"
    );
    assert_eq!(
        record_header(plain, "ce-id").len(),
        36,
        "a UUID: core NATS has no stable id"
    );
    assert!(
        record_header(plain, "idempotency-key").is_empty(),
        "and so no idempotency key"
    );
}
