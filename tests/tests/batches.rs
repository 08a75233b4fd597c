//! Batches (`com.tributary.batch.size`, `com.tributary.batch.window`) against the real brokers:
//! a function gets JSON arrays of items, answers Lambda's `batchItemFailures`, and only the
//! failed items (with the later items of their keys) come again; order per key holds inside and
//! across batches.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::kafka::KafkaBroker;
use tributary_tests::sqs::MotoServer;
use tributary_tests::{
    ConnectorProcess, GatewayProcess, NatsServer, eventually, js_publish, metric_value,
};

/// A mode=http function that records each batch it gets (`{"items", "failed"}` per line) and
/// reports as failed, once, every item whose payload has `"fail": true`.
const BATCH_FUNCTION: &str = r#"
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
RECORD = os.environ["RECORD_FILE"]
lock = threading.Lock()
failed_once = set()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        items = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        failures = []
        with lock:
            for item in items:
                p = item["payload"]
                if isinstance(p, dict) and p.get("fail") and item["id"] not in failed_once:
                    failed_once.add(item["id"])
                    failures.append(item["id"])
            with open(RECORD, "a") as f:
                f.write(json.dumps({"items": items, "failed": failures}) + "\n")
        out = json.dumps({"batchItemFailures": [{"itemIdentifier": i} for i in failures]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn batch_function(dir: &Path, name: &str, topic: &str, size: &str) -> (Value, PathBuf) {
    let script = dir.join("batch_function.py");
    std::fs::write(&script, BATCH_FUNCTION).unwrap();
    let record = dir.join(format!("{name}.jsonl"));
    let d = json!({
        "service": name,
        "image": "tributary/batch:test",
        "envProcess": format!("python3 {}", script.display()),
        "envVars": {"mode": "http", "RECORD_FILE": record.display().to_string()},
        "annotations": {
            "topic": topic,
            "com.tributary.batch.size": size,
            "com.tributary.batch.window": "300ms",
            "com.openfaas.retry.min_wait": "50ms",
        },
    });
    (d, record)
}

/// Every batch the function got, in order.
fn batches(record: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `n` of each item whose delivery succeeded, in delivery order.
fn succeeded(record: &Path) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in batches(record) {
        let failed: Vec<&str> = b["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for item in b["items"].as_array().unwrap() {
            if !failed.contains(&item["id"].as_str().unwrap()) {
                let p = &item["payload"];
                out.push((
                    p["key"].as_str().unwrap().to_owned(),
                    p["n"].as_i64().unwrap(),
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn kafka_batches_retry_only_failed_items_and_keep_order_per_key() {
    const N: i64 = 60;
    let kafka = KafkaBroker::start();
    kafka.create_topic("events", 1);
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (d, record) = batch_function(dir.path(), "batcher", "events", "10");
    gw.deploy_ok(d).await;
    let producer = kafka.producer();
    for n in 0..N {
        let key = format!("k{}", n % 3);
        let payload = json!({"n": n, "key": key, "fail": n == 4 || n == 31}).to_string();
        kafka
            .produce(
                &producer,
                "events",
                Some(0),
                Some(key.as_bytes()),
                &payload,
                &[],
            )
            .await;
    }
    let base = kafka.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("topics", "events"),
        ("order", "key"),
        ("max_inflight", "64"),
        ("rebuild_interval", "500ms"),
    ]);
    let connector = ConnectorProcess::start("kafka", &gw, &env);
    eventually(
        Duration::from_secs(60),
        "every record acknowledged",
        || async {
            metric_value(
                &connector.metrics().await,
                r#"connector_messages_acked_total{topic="events"}"#,
            ) == N as f64
        },
    )
    .await;
    let all = batches(&record);
    let sizes: Vec<usize> = all
        .iter()
        .map(|b| b["items"].as_array().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|s| (1..=10).contains(s)), "{sizes:?}");
    assert!(
        sizes.iter().any(|s| *s > 1),
        "records arrive in batches: {sizes:?}"
    );
    let item = &all[0]["items"][0];
    assert_eq!(item["id"].as_str().unwrap(), "kafka:events:0:0");
    assert_eq!(item["topic"], "events");
    assert_eq!(item["headers"]["X-Kafka-Key"], "k0");
    assert_eq!(all[0]["items"][0]["payload"]["n"], 0, "payload as JSON");

    // Each record succeeded exactly once, except that a failed one takes the later records of its
    // key in that batch with it; records of other keys are never sent again.
    let done = succeeded(&record);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, n) in &done {
        *seen.entry(*n).or_default() += 1;
    }
    assert_eq!(seen.len(), N as usize, "every record delivered: {seen:?}");
    let sent_twice: Vec<i64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        sent_twice.iter().all(|n| n % 3 == 4 % 3),
        "only records of the failed items' key went again: {sent_twice:?}"
    );
    let attempts_of = |n: i64| {
        all.iter()
            .flat_map(|b| b["items"].as_array().unwrap().iter())
            .filter(|i| i["payload"]["n"] == n)
            .count()
    };
    assert_eq!(attempts_of(4), 2, "the failed item was retried once");
    assert_eq!(attempts_of(31), 2);
    assert_eq!(
        attempts_of(5),
        1,
        "an item of another key in the failing batch was not"
    );
    // Order per key, inside and across batches: each key's successes come in offset order.
    for key in ["k0", "k1", "k2"] {
        let ns: Vec<i64> = done
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .collect();
        let mut last_success: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, n) in ns.iter().enumerate() {
            last_success.insert(*n, i);
        }
        let order: Vec<i64> = {
            let mut v: Vec<(usize, i64)> = last_success.iter().map(|(n, i)| (*i, *n)).collect();
            v.sort();
            v.into_iter().map(|(_, n)| n).collect()
        };
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{key}: final deliveries out of order: {ns:?}"
        );
    }
}

#[tokio::test]
async fn sqs_batches_hand_back_only_the_failed_items() {
    let sqs = MotoServer::start();
    let queue = sqs.create_queue("jobs").await;
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (d, record) = batch_function(dir.path(), "jobs-batch", "jobs", "5");
    gw.deploy_ok(d).await;
    for n in 0..5 {
        let body = json!({"n": n, "key": "all", "fail": n == 2}).to_string();
        sqs.send(&queue, &body, &[], None).await;
    }
    let base = sqs.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("queue_url", queue.as_str()),
        ("wait_time", "1s"),
        ("visibility_timeout", "2s"),
        ("rebuild_interval", "500ms"),
    ]);
    let _connector = ConnectorProcess::start("sqs", &gw, &env);
    eventually(
        Duration::from_secs(60),
        "all five done and the queue empty",
        || async { succeeded(&record).len() == 5 && sqs.depth(&queue).await == 0 },
    )
    .await;
    let all = batches(&record);
    assert!(all[0]["items"].as_array().unwrap().len() > 1, "{all:?}");
    let ids: Vec<&str> = all
        .iter()
        .flat_map(|b| b["items"].as_array().unwrap().iter())
        .map(|i| i["payload"]["n"].as_i64().unwrap())
        .map(|n| if n == 2 { "failed" } else { "other" })
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == "failed").count(),
        2,
        "the failed item came back once"
    );
    assert_eq!(
        ids.iter().filter(|i| **i == "other").count(),
        4,
        "the others were deleted, not redelivered"
    );
    assert!(
        all[0]["items"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("sqs:")
    );
}

#[tokio::test]
async fn jetstream_batches_redeliver_only_the_failed_items() {
    let nats = NatsServer::start();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (d, record) = batch_function(dir.path(), "work-batch", "work.>", "5");
    gw.deploy_ok(d).await;
    let js = nats.stream("work", "work.>").await;
    for n in 0..5 {
        let body = json!({"n": n, "key": "all", "fail": n == 2}).to_string();
        js_publish(&js, format!("work.{n}"), body).await;
    }
    let _connector = nats.jetstream_connector(&gw, "work", "work.>", &[]);
    eventually(Duration::from_secs(60), "all five done", || async {
        succeeded(&record).len() == 5
    })
    .await;
    let all = batches(&record);
    let items: Vec<&Value> = all
        .iter()
        .flat_map(|b| b["items"].as_array().unwrap().iter())
        .collect();
    assert!(all[0]["items"].as_array().unwrap().len() > 1, "{all:?}");
    assert_eq!(items.len(), 6, "only the failed item came again: {all:?}");
    let failed: Vec<&&Value> = items.iter().filter(|i| i["payload"]["n"] == 2).collect();
    assert_eq!(failed.len(), 2);
    assert_eq!(
        failed[0]["id"], "nats:work:3",
        "the stream sequence, the same on redelivery"
    );
    assert_eq!(failed[1]["id"], "nats:work:3");
}
