//! The NATS connector as a real process against a real `nats-server -js` and a real gateway.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use tributary_tests::{
    ConnectorProcess, GatewayProcess, NatsServer, eventually, js_publish,
    kill_mid_stream_and_restart, read_records, recorder_function,
};

async fn wait_for_log(connector: &ConnectorProcess, needle: &str) {
    eventually(Duration::from_secs(20), needle, || async {
        connector.logs().contains(needle)
    })
    .await;
}

#[tokio::test]
async fn core_mode_fans_out_matches_wildcards_passes_headers_and_replies() {
    let nats = NatsServer::start();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(format!("{n}.jsonl"));
    gw.deploy_ok(recorder_function("a", "orders", &file("a"), &[]))
        .await;
    gw.deploy_ok(recorder_function("b", "orders", &file("b"), &[]))
        .await;
    gw.deploy_ok(recorder_function(
        "exact",
        "events.eu.created",
        &file("exact"),
        &[],
    ))
    .await;
    gw.deploy_ok(recorder_function("wild", "events.>", &file("wild"), &[]))
        .await;
    let connector = ConnectorProcess::start(
        "nats",
        &gw,
        &[
            ("nats_url", nats.url.as_str()),
            ("topics", "orders,events.>"),
            ("rebuild_interval", "500ms"),
        ],
    );
    wait_for_log(&connector, "subscribed (core NATS").await;

    let client = async_nats::connect(&nats.url).await.unwrap();
    for i in 0..3 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Trace", format!("t{i}").as_str());
        client
            .publish_with_headers("orders", headers, format!("order-{i}").into())
            .await
            .unwrap();
    }
    client
        .publish("events.eu.created", "eu".into())
        .await
        .unwrap();
    client
        .publish("events.us.deleted", "us".into())
        .await
        .unwrap();
    client.flush().await.unwrap();

    eventually(Duration::from_secs(20), "every delivery", || async {
        read_records(&file("a")).len() == 3
            && read_records(&file("b")).len() == 3
            && read_records(&file("exact")).len() == 1
            && read_records(&file("wild")).len() == 2
    })
    .await;
    let a = read_records(&file("a"));
    let traces: BTreeSet<String> = a
        .iter()
        .map(|r| r["headers"]["x-trace"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        traces,
        ["t0", "t1", "t2"].map(String::from).into_iter().collect()
    );
    assert_eq!(a[0]["headers"]["x-topic"], "orders");
    assert_eq!(a[0]["headers"]["x-connector"], "nats-connector");
    assert_eq!(a[0]["headers"]["x-nats-subject"], "orders");
    // The concrete subject's subscriber and the pattern's subscriber both got events.eu.created.
    assert_eq!(read_records(&file("exact"))[0]["body"], "eu");
    let wild: BTreeSet<String> = read_records(&file("wild"))
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(wild, ["eu", "us"].map(String::from).into_iter().collect());

    // Request/reply: the reply subject gets a function's response.
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request("events.eu.created", "ping".into()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&reply.payload[..], b"ok ping");
    let h = reply.headers.unwrap();
    assert_eq!(h.get("X-Function-Status").unwrap().as_str(), "200");
    assert!(["exact", "wild"].contains(&h.get("X-Function-Name").unwrap().as_str()));
}

/// The connector in JetStream mode on the stream `tributary-events` (its default) for `jobs.>`.
fn jetstream_connector(
    nats: &NatsServer,
    gw: &GatewayProcess,
    extra: &[(&str, &str)],
) -> ConnectorProcess {
    let mut env = vec![
        ("ack_wait", "2s"),
        ("max_inflight", "8"),
        ("print_response", "false"),
    ];
    env.extend_from_slice(extra);
    nats.jetstream_connector(gw, "tributary-events", "jobs.>", &env)
}

#[tokio::test]
async fn jetstream_delivers_every_message_across_a_sigkill() {
    let nats = NatsServer::start();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("jobs.jsonl");
    gw.deploy_ok(recorder_function(
        "worker",
        "jobs.>",
        &record,
        &[("DELAY_MS", "15")],
    ))
    .await;
    let js = nats.stream("tributary-events", "jobs.>").await;
    let n = 300;
    for i in 0..n {
        js_publish(&js, format!("jobs.{}", i % 3), format!("job-{i:03}")).await;
    }
    let (_, duplicates, _connector) =
        kill_mid_stream_and_restart(|| jetstream_connector(&nats, &gw, &[]), &record, n).await;
    assert!(
        duplicates <= 8,
        "{duplicates} duplicates for {n} messages: duplicates stay within max_inflight (8)"
    );
}

#[tokio::test]
async fn jetstream_dead_letters_go_to_the_dead_letter_subject() {
    let nats = NatsServer::start();
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("bad.jsonl");
    gw.deploy_ok(recorder_function(
        "bad",
        "jobs.>",
        &record,
        &[("ALWAYS_STATUS", "500")],
    ))
    .await;
    let js = nats.stream("tributary-events", "jobs.>").await;
    let client = async_nats::connect(&nats.url).await.unwrap();
    let mut dlq = client.subscribe("dlq.jobs").await.unwrap();
    client.flush().await.unwrap();
    let _connector = jetstream_connector(
        &nats,
        &gw,
        &[
            ("dead_letter_subject", "dlq.jobs"),
            ("max_retries", "1"),
            ("initial_retry_wait", "20ms"),
        ],
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Order", "77");
    js.publish_with_headers("jobs.eu", headers, "poison".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(20), dlq.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&letter.payload[..], b"poison");
    let h = letter.headers.unwrap();
    assert_eq!(h.get("X-Function-Name").unwrap().as_str(), "bad");
    assert_eq!(h.get("X-Function-Status").unwrap().as_str(), "500");
    assert_eq!(h.get("X-Attempts").unwrap().as_str(), "2");
    assert_eq!(h.get("X-Original-Subject").unwrap().as_str(), "jobs.eu");
    assert_eq!(h.get("X-Order").unwrap().as_str(), "77");
    // Terminated: not delivered again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(read_records(&record).len(), 2);
}

#[test]
fn bad_nats_config_fails_with_a_clear_error() {
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(tributary_tests::tributary_bin())
            .args(["connector", "nats"])
            .env("metrics_port", "0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("topics"), "{err}");
    let (code, err) = run(&[("topics", "a"), ("nats_mode", "fast")]);
    assert_eq!(
        code,
        Some(2),
        "a value that does not parse is a usage error"
    );
    assert!(err.contains("invalid nats_mode=\"fast\""), "{err}");
    let port = tributary_tests::free_port().to_string();
    let (code, err) = run(&[
        ("topics", "a"),
        ("broker_host", &format!("127.0.0.1:{port}")),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect to NATS"), "{err}");
}

#[tokio::test]
async fn user_and_password_are_used_and_a_wrong_password_fails_clearly() {
    let nats = NatsServer::start_with_config("authorization { user: tri, password: s3cret }");
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("auth.jsonl");
    gw.deploy_ok(recorder_function("secure", "secure", &record, &[]))
        .await;
    let connector = ConnectorProcess::start(
        "nats",
        &gw,
        &[
            ("nats_url", nats.url.as_str()),
            ("topics", "secure"),
            ("nats_user", "tri"),
            ("nats_password", "s3cret"),
        ],
    );
    wait_for_log(&connector, "subscribed (core NATS").await;
    let client = async_nats::ConnectOptions::with_user_and_password("tri".into(), "s3cret".into())
        .connect(&nats.url)
        .await
        .unwrap();
    client.publish("secure", "hello".into()).await.unwrap();
    client.flush().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "delivered with credentials",
        || async { read_records(&record).len() == 1 },
    )
    .await;

    let out = std::process::Command::new(tributary_tests::tributary_bin())
        .args(["connector", "nats"])
        .env("gateway_url", &gw.base)
        .env("nats_url", &nats.url)
        .env("topics", "secure")
        .env("nats_user", "tri")
        .env("nats_password", "wrong")
        .env("metrics_port", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
}
