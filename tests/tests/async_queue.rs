//! Asynchronous invocations through both queue backends (embedded SQLite and a real
//! `nats-server -js`): callbacks, bad requests, body limits, retries and dead letters.
//! Restarts and SIGKILLed workers are in async_queue_recovery.rs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::queue::{Backend, both, enqueue};
use tributary_tests::{
    CallbackServer, GatewayProcess, NatsServer, eventually, read_records, recorder_function,
};

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
