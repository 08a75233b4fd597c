//! W3C trace context from a Kafka header to the function, through the connector's spans
//! (deliver → invoke → acknowledge) and the gateway's (proxy), exported over OTLP/HTTP JSON to
//! an HTTP endpoint that records what it is sent.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tributary_tests::kafka::KafkaBroker;
use tributary_tests::{
    CallbackServer, ConnectorProcess, GatewayOptions, GatewayProcess, eventually, read_records,
    record_header, recorder_function,
};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// Every exported span by name, with its service.
fn spans(collector: &CallbackServer) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for r in collector.received() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        for rs in body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                .as_str()
                .unwrap()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    out.push((service.clone(), s.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn traceparent_continues_from_a_kafka_header_through_the_gateway_to_the_function() {
    let collector = CallbackServer::start(0).await;
    let otlp = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str())];
    let kafka = KafkaBroker::start();
    kafka.create_topic("traced", 1);
    let gw = GatewayProcess::start_with(GatewayOptions::default().envs(&otlp)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traced.jsonl");
    gw.deploy_ok(recorder_function("traced", "traced", &file, &[]))
        .await;
    let base = kafka.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("topics", "traced"), ("rebuild_interval", "500ms")]);
    env.extend(otlp);
    let connector = ConnectorProcess::start("kafka", &gw, &env);
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(40))
        .await;
    let producer = kafka.producer();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    kafka
        .produce(
            &producer,
            "traced",
            Some(0),
            None,
            "with-trace",
            &[
                ("traceparent", traceparent.as_bytes()),
                ("tracestate", b"vendor=1"),
            ],
        )
        .await;
    kafka
        .produce(&producer, "traced", Some(0), None, "no-trace", &[])
        .await;
    eventually(Duration::from_secs(40), "both delivered", || async {
        read_records(&file).len() == 2
    })
    .await;
    let records = read_records(&file);
    let got = |body: &str| {
        let r = records.iter().find(|r| r["body"] == body).unwrap();
        (
            record_header(r, "traceparent").to_owned(),
            record_header(r, "tracestate").to_owned(),
        )
    };
    let (continued, state) = got("with-trace");
    let parts: Vec<&str> = continued.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{continued}"
    );
    assert_ne!(parts[2], PARENT, "the function's parent is a span of ours");
    assert_eq!(state, "vendor=1", "tracestate passes unchanged");
    let (started, _) = got("no-trace");
    let fresh: Vec<&str> = started.split('-').collect();
    assert_eq!(fresh.len(), 4, "{started}");
    assert_ne!(fresh[1], TRACE, "a new trace for a message without one");

    // The spans, as exported: the chain deliver → invoke → proxy → the function.
    eventually(
        Duration::from_secs(20),
        "the spans of the trace",
        || async {
            let names: Vec<String> = spans(&collector)
                .iter()
                .filter(|(_, s)| s["traceId"] == TRACE)
                .map(|(_, s)| s["name"].as_str().unwrap().to_owned())
                .collect();
            ["deliver", "invoke", "acknowledge", "proxy"]
                .iter()
                .all(|n| names.iter().any(|m| m == n))
        },
    )
    .await;
    let by_name: BTreeMap<String, (String, Value)> = spans(&collector)
        .into_iter()
        .filter(|(_, s)| s["traceId"] == TRACE)
        .map(|(service, s)| (s["name"].as_str().unwrap().to_owned(), (service, s)))
        .collect();
    let span = |n: &str| &by_name[n].1;
    assert_eq!(by_name["deliver"].0, "tributary-kafka-connector");
    assert_eq!(by_name["proxy"].0, "tributary-gateway");
    assert_eq!(span("deliver")["parentSpanId"], PARENT);
    assert_eq!(span("deliver")["kind"], 5);
    assert_eq!(span("invoke")["parentSpanId"], span("deliver")["spanId"]);
    assert_eq!(
        span("acknowledge")["parentSpanId"],
        span("deliver")["spanId"]
    );
    assert_eq!(span("proxy")["parentSpanId"], span("invoke")["spanId"]);
    assert_eq!(
        parts[2],
        span("proxy")["spanId"],
        "the function's parent is the gateway's span"
    );
    assert_eq!(span("proxy")["status"]["code"], 1);
}
