//! The autoscaler against `tributary up` with real, bounded load: `capacity` and `rps` scale a
//! function up and back to its minimum after the window, an idle function with
//! `com.openfaas.scale.zero` goes to zero and cold sync and async calls are held and answered,
//! and Alertmanager webhooks on `/system/alert` scale as OpenFaaS CE does.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::{
    CallLoad, CallbackServer, GatewayOptions, GatewayProcess, eventually, metric_value,
};

/// A stack of echo functions (`tributary echo`, one process per replica) with these labels.
fn stack(dir: &std::path::Path, functions: &[(&str, &[(&str, &str)])]) -> PathBuf {
    let mut text = String::from("functions:\n");
    for (name, labels) in functions {
        text.push_str(&format!(
            "  {name}:\n    fprocess: tributary echo\n    environment:\n      mode: http\n    labels:\n"
        ));
        for (k, v) in *labels {
            text.push_str(&format!("      {k}: \"{v}\"\n"));
        }
    }
    let path = dir.join("stack.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A stack file of these functions (YAML snippets from [`queue_function`] or written out).
fn write_stack(dir: &std::path::Path, functions: &[String]) -> PathBuf {
    let path = dir.join("stack.yml");
    std::fs::write(&path, format!("functions:\n{}", functions.concat())).unwrap();
    path
}

/// A fork-mode function scaled on what waits for it (`queue`), one replica per `target`
/// messages up to `max`, subscribed to `topic`.
fn queue_function(name: &str, command: &str, target: u32, max: u32, topic: Option<&str>) -> String {
    let mut f = format!(
        "  {name}:\n    fprocess: {command}\n    labels:\n      com.openfaas.scale.type: queue\n      com.openfaas.scale.target: \"{target}\"\n      com.openfaas.scale.target-proportion: \"1.0\"\n      com.openfaas.scale.max: \"{max}\"\n      com.openfaas.scale.down.window: 3s\n"
    );
    if let Some(topic) = topic {
        f.push_str(&format!("    annotations:\n      topic: {topic}\n"));
    }
    f
}

async fn up(stack: PathBuf) -> GatewayProcess {
    GatewayProcess::start_with(
        GatewayOptions::default()
            .stack(stack)
            .arg("--no-cron")
            .env("autoscaler_interval", "500ms"),
    )
    .await
}

async fn replicas(gw: &GatewayProcess, name: &str) -> u64 {
    gw.client
        .function(name, None)
        .await
        .map_or(u64::MAX, |f| f.replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_scales_with_calls_in_flight_and_back_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let gw = up(stack(
        dir.path(),
        &[(
            "cap",
            &[
                ("com.openfaas.scale.type", "capacity"),
                ("com.openfaas.scale.target", "5"),
                ("com.openfaas.scale.target-proportion", "1.0"),
                ("com.openfaas.scale.max", "10"),
                ("com.openfaas.scale.down.window", "3s"),
            ],
        )],
    ))
    .await;
    assert_eq!(replicas(&gw, "cap").await, 1);
    // 20 slow calls in flight at all times: 20 / 5 → 4 replicas.
    let started = Instant::now();
    let load = CallLoad::start(&gw, "cap", 20, 1000, Duration::ZERO);
    eventually(
        Duration::from_secs(15),
        "cap to reach 4 replicas",
        || async { replicas(&gw, "cap").await == 4 },
    )
    .await;
    println!(
        "capacity: 4 replicas {:?} after the load started",
        started.elapsed()
    );
    gw.wait_available("cap", 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicas(&gw, "cap").await, 4, "steady under steady load");
    // The window counts from the last tick that still saw the load, at or after this.
    let stopped = Instant::now();
    let (calls, failed) = load.stop().await;
    assert_eq!(failed, 0, "of {calls} calls");
    eventually(
        Duration::from_secs(15),
        "cap back to its minimum",
        || async { replicas(&gw, "cap").await == 1 },
    )
    .await;
    let back = stopped.elapsed();
    println!("capacity: back to 1 replica {back:?} after the load stopped (window 3s)");
    assert!(
        back >= Duration::from_secs(3),
        "not before the window: {back:?}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "gateway_autoscaler_decisions_total{function_name=\"cap.openfaas-fn\",reason=\"scale_up\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(gw.logs().contains("autoscaler: scaling"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rps_scales_with_the_request_rate_and_back_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let gw = up(stack(
        dir.path(),
        &[(
            "rate",
            &[
                ("com.openfaas.scale.type", "rps"),
                ("com.openfaas.scale.target", "10"),
                ("com.openfaas.scale.target-proportion", "1.0"),
                ("com.openfaas.scale.down.window", "3s"),
            ],
        )],
    ))
    .await;
    // About 35 requests per second (5 loops, one call each 140 ms): 35 / 10 → 4 replicas.
    let started = Instant::now();
    let load = CallLoad::start(&gw, "rate", 5, 0, Duration::from_millis(140));
    eventually(
        Duration::from_secs(15),
        "rate to reach 4 replicas",
        || async { replicas(&gw, "rate").await == 4 },
    )
    .await;
    println!(
        "rps: 4 replicas {:?} after the load started",
        started.elapsed()
    );
    let (calls, failed) = load.stop().await;
    assert_eq!(failed, 0, "of {calls} calls");
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    assert!((28.0..=42.0).contains(&rate), "the load was {rate:.1} rps");
    eventually(
        Duration::from_secs(15),
        "rate back to its minimum",
        || async { replicas(&gw, "rate").await == 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_functions_go_to_zero_and_cold_calls_are_held_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let gw = up(stack(
        dir.path(),
        &[(
            "sleepy",
            &[
                ("com.openfaas.scale.zero", "true"),
                ("com.openfaas.scale.zero-duration", "2s"),
            ],
        )],
    ))
    .await;
    let warm = Instant::now();
    assert_eq!(gw.invoke("sleepy", "warm").await.status(), 200);
    let warm = warm.elapsed();
    eventually(Duration::from_secs(10), "sleepy to go to zero", || async {
        replicas(&gw, "sleepy").await == 0
    })
    .await;
    gw.wait_available("sleepy", 0).await;

    // A cold sync call: held until a replica is up, then answered.
    let cold = Instant::now();
    let r = gw.invoke("sleepy", "cold").await;
    let cold = cold.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "cold");
    println!("cold sync call {cold:?}, warm call {warm:?}");
    assert_eq!(replicas(&gw, "sleepy").await, 1);

    // Idle again, then a cold async call: delivered to its callback.
    eventually(
        Duration::from_secs(10),
        "sleepy to go to zero again",
        || async { replicas(&gw, "sleepy").await == 0 },
    )
    .await;
    gw.wait_available("sleepy", 0).await;
    let callback = CallbackServer::start(0).await;
    let r = gw
        .http
        .post(gw.url("/async-function/sleepy"))
        .header("X-Callback-Url", &callback.url)
        .body("cold async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = callback.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body, b"cold async");
    assert_eq!(
        got[0].headers.get("x-function-status").map(String::as_str),
        Some("200")
    );
    let metrics = gw.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "gateway_autoscaler_decisions_total{function_name=\"sleepy.openfaas-fn\",reason=\"to_zero\"}"
        ) >= 2.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn alertmanager_webhooks_scale_as_openfaas_ce() {
    let dir = tempfile::tempdir().unwrap();
    let gw = up(stack(
        dir.path(),
        &[(
            "alerted",
            &[
                ("com.openfaas.scale.max", "10"),
                ("com.openfaas.scale.factor", "20"),
            ],
        )],
    ))
    .await;
    let hook = |status: &str| {
        json!({
            "receiver": "scale-up", "status": status,
            "alerts": [{"status": status, "labels": {
                "alertname": "APIHighRequestRate", "function_name": "alerted", "service": "gateway"
            }}]
        })
    };
    let send = |body: serde_json::Value| {
        let r = gw.http.post(gw.url("/system/alert")).json(&body);
        async move { r.send().await.unwrap() }
    };
    // Firing: + 20 % of 10 = 2 replicas per alert, up to the maximum.
    assert_eq!(send(hook("firing")).await.status(), 200);
    assert_eq!(replicas(&gw, "alerted").await, 3);
    assert_eq!(send(hook("firing")).await.status(), 200);
    assert_eq!(replicas(&gw, "alerted").await, 5);
    assert_eq!(send(hook("resolved")).await.status(), 200);
    assert_eq!(replicas(&gw, "alerted").await, 1);
    // Alerts need the gateway's credentials, and a bad body is a 400.
    let anonymous = reqwest::Client::new()
        .post(gw.url("/system/alert"))
        .json(&hook("firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let r = gw
        .http
        .post(gw.url("/system/alert"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Kafka lag drives replicas: the connector reports its consumer lag to the gateway, which
/// scales the functions subscribed to the topic (type `queue`), wakes a function at zero
/// before its first delivery, and a cold delivery is held and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_lag_scales_the_subscribed_functions() {
    let kafka = tributary_tests::kafka::KafkaBroker::start();
    kafka.create_topic("orders", 1);
    kafka.create_topic("wakeup", 1);
    let dir = tempfile::tempdir().unwrap();
    let sleeper = "  sleeper:\n    fprocess: cat\n    labels:\n      com.openfaas.scale.zero: \"true\"\n      com.openfaas.scale.zero-duration: 2s\n    annotations:\n      topic: wakeup\n";
    let stack = write_stack(
        dir.path(),
        &[
            queue_function("worker", "sh -c 'sleep 0.1; cat'", 10, 5, Some("orders")),
            sleeper.to_owned(),
        ],
    );
    let gw = up(stack).await;
    let base = kafka.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("topics", "orders,wakeup"),
        ("max_inflight", "1"),
        ("rebuild_interval", "500ms"),
    ]);
    let connector = tributary_tests::ConnectorProcess::start("kafka", &gw, &env);
    connector
        .wait_for_log("partitions assigned", Duration::from_secs(60))
        .await;
    eventually(Duration::from_secs(15), "sleeper to go to zero", || async {
        replicas(&gw, "sleeper").await == 0
    })
    .await;

    // 60 messages served one at a time: lag 60 / 10 → 6, at most 5 replicas.
    let started = Instant::now();
    kafka.produce_many("orders", 1, "order", 60).await;
    eventually(
        Duration::from_secs(20),
        "worker to scale on the lag",
        || async { replicas(&gw, "worker").await == 5 },
    )
    .await;
    println!(
        "kafka lag: 5 replicas {:?} after producing",
        started.elapsed()
    );
    assert!(gw.logs().contains("waiting="), "{}", gw.logs());
    eventually(
        Duration::from_secs(60),
        "worker back to 1 once the lag is gone",
        || async { replicas(&gw, "worker").await == 1 },
    )
    .await;

    // A message for a function at zero: woken and delivered, nothing failed.
    kafka.produce_many("wakeup", 1, "hello", 1).await;
    let metrics_has = |m: String| {
        metric_value(
            &m,
            "gateway_function_invocation_total{code=\"200\",function_name=\"sleeper.openfaas-fn\"}",
        ) >= 1.0
    };
    let mut delivered = false;
    for _ in 0..200 {
        if metrics_has(gw.metrics().await) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        delivered,
        "the cold delivery was answered:\n{}\n{}",
        gw.metrics().await,
        connector.logs()
    );
    let failed = metric_value(
        &gw.metrics().await,
        "gateway_function_invocation_total{code=\"503\",function_name=\"sleeper.openfaas-fn\"}",
    );
    assert_eq!(failed, 0.0);
}

/// Queued async calls (one taken at a time) scale a `queue` function: 30 waiting / 5 → 6,
/// at most 4. `queue_env` picks the backend.
async fn queued_calls_scale(queue_env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let stack = write_stack(
        dir.path(),
        &[queue_function(
            "batch",
            "sh -c 'sleep 0.5; cat'",
            5,
            4,
            None,
        )],
    );
    // One call at a time from the queue: 30 queued calls wait there.
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .stack(stack)
            .arg("--no-cron")
            .env("autoscaler_interval", "500ms")
            .env("max_inflight", "1")
            .envs(queue_env),
    )
    .await;
    for i in 0..30 {
        let r = gw
            .http
            .post(gw.url("/async-function/batch"))
            .body(format!("job {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // 30 waiting / 5 → 6, at most 4.
    eventually(
        Duration::from_secs(10),
        "batch to scale on its queue",
        || async { replicas(&gw, "batch").await == 4 },
    )
    .await;
    let waiting = gw
        .logs()
        .lines()
        .find(|l| l.contains("autoscaler: scaling") && l.contains("batch"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        waiting.contains("waiting="),
        "the decision says what waits: {waiting}"
    );
    assert!(
        metric_value(
            &gw.metrics().await,
            "gateway_autoscaler_decisions_total{function_name=\"batch.openfaas-fn\",reason=\"scale_up\"}"
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_queue_depth_scales_queue_functions() {
    queued_calls_scale(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_queue_depth_scales_queue_functions() {
    let nats = tributary_tests::NatsServer::start();
    queued_calls_scale(&[("nats_url", nats.url.as_str())]).await;
}

/// SQS: the connector reports each queue's ApproximateNumberOfMessages as its topic's lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_depth_scales_the_subscribed_function() {
    let moto = tributary_tests::sqs::MotoServer::start();
    let url = moto.create_queue("jobs").await;
    let dir = tempfile::tempdir().unwrap();
    let stack = write_stack(
        dir.path(),
        &[queue_function(
            "jobs",
            "sh -c 'sleep 0.3; cat'",
            5,
            4,
            Some("jobs"),
        )],
    );
    let gw = up(stack).await;
    // 40 messages taken one at a time: 40 / 5 → 8, at most 4.
    moto.send_many(&url, "job", 40).await;
    let base = moto.connector_env();
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("queue_url", url.as_str()),
        ("max_inflight", "1"),
        ("max_messages", "1"),
    ]);
    let connector = tributary_tests::ConnectorProcess::start("sqs", &gw, &env);
    eventually(
        Duration::from_secs(20),
        "jobs to scale on the queue's depth",
        || async { replicas(&gw, "jobs").await == 4 },
    )
    .await;
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("autoscaler: scaling") && l.contains("jobs"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("waiting="), "{line}\n{}", connector.logs());
}

/// NATS JetStream: the connector reports its consumer's pending count as its topic's lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_pending_scales_the_subscribed_function() {
    let nats = tributary_tests::NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "tributary-events".into(),
        subjects: vec!["work.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..60 {
        js.publish("work.a", format!("w{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let stack = write_stack(
        dir.path(),
        &[queue_function(
            "work",
            "sh -c 'sleep 0.3; cat'",
            5,
            4,
            Some("work.>"),
        )],
    );
    let gw = up(stack).await;
    // Taken one at a time: about 60 pending / 5 → 12, at most 4.
    let _connector = tributary_tests::ConnectorProcess::start(
        "nats",
        &gw,
        &[
            ("nats_url", nats.url.as_str()),
            ("topics", "work.>"),
            ("nats_mode", "jetstream"),
            ("max_inflight", "1"),
            ("rebuild_interval", "500ms"),
        ],
    );
    eventually(
        Duration::from_secs(20),
        "work to scale on the pending count",
        || async { replicas(&gw, "work").await == 4 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_zero_duration_is_not_cut_by_scaling_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let gw = up(stack(
        dir.path(),
        &[(
            "long",
            &[
                ("com.openfaas.scale.zero", "true"),
                ("com.openfaas.scale.zero-duration", "1s"),
            ],
        )],
    ))
    .await;
    // 3 s in flight with no new call: idle by the request rate, busy by what runs.
    let r = gw
        .http
        .post(gw.url("/function/long"))
        .header("X-Echo-Sleep-Ms", "3000")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "still here");
    // Then, idle for real, it goes to zero.
    eventually(Duration::from_secs(10), "long to go to zero", || async {
        replicas(&gw, "long").await == 0
    })
    .await;
}
