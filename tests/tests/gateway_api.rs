//! The OpenFaaS REST API of a real `tributary gateway` process, with real function processes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{GatewayOptions, GatewayProcess, echo_function, fork_function};

#[tokio::test]
async fn crud_routes_follow_openfaas() {
    let gw = GatewayProcess::start().await;
    let r = gw
        .http
        .post(gw.url("/system/secrets"))
        .json(&json!({"name": "api-key", "value": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Deploy with every OpenFaaS field, then read it back.
    let mut d = echo_function("echo");
    d["labels"] = json!({"team": "payments"});
    d["annotations"] = json!({"topic": "payments,refunds"});
    d["secrets"] = json!(["api-key"]);
    d["constraints"] = json!(["node=a"]);
    d["limits"] = json!({"memory": "128Mi"});
    d["requests"] = json!({"cpu": "100m"});
    d["readOnlyRootFilesystem"] = json!(true);
    gw.deploy_ok(d).await;

    let list: Vec<Value> = gw.get_json("/system/functions").await;
    assert_eq!(list.len(), 1);
    let f = &list[0];
    assert_eq!(f["name"], "echo");
    assert_eq!(f["namespace"], "openfaas-fn");
    assert_eq!(f["image"], "tributary/echo:test");
    assert_eq!(f["envProcess"], "tributary echo");
    assert_eq!(f["envVars"]["mode"], "http");
    assert_eq!(f["labels"]["team"], "payments");
    assert_eq!(f["annotations"]["topic"], "payments,refunds");
    assert_eq!(f["secrets"][0], "api-key");
    assert_eq!(f["constraints"][0], "node=a");
    assert_eq!(f["limits"]["memory"], "128Mi");
    assert_eq!(f["requests"]["cpu"], "100m");
    assert_eq!(f["readOnlyRootFilesystem"], true);
    assert_eq!(f["replicas"], 1);
    assert_eq!(f["availableReplicas"], 1);
    assert_eq!(f["invocationCount"], 0.0);
    assert!(f["createdAt"].as_str().unwrap().starts_with("20"), "{f}");

    // Invocations are counted in the status.
    for _ in 0..3 {
        assert_eq!(gw.invoke("echo", "x").await.status(), 200);
    }
    let status = gw.status("echo").await;
    assert_eq!(status["invocationCount"], 3.0);

    // PUT updates in place: new env var, same createdAt, processes restarted.
    let mut updated = echo_function("echo");
    updated["envVars"]["release"] = json!("2");
    updated["annotations"] = json!({"topic": "refunds"});
    let r = gw
        .http
        .put(gw.url("/system/functions"))
        .json(&updated)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let after = gw.status("echo").await;
    assert_eq!(after["envVars"]["release"], "2");
    assert_eq!(after["annotations"]["topic"], "refunds");
    assert_eq!(after["createdAt"], status["createdAt"]);
    assert_eq!(
        gw.invoke("echo", "still here").await.text().await.unwrap(),
        "still here"
    );

    // Namespaces: the default, plus any a function was deployed to.
    let mut other = fork_function("cat", "cat");
    other["namespace"] = json!("team-b");
    gw.deploy_ok(other).await;
    let ns: Vec<String> = gw.get_json("/system/namespaces").await;
    assert_eq!(ns, vec!["openfaas-fn".to_string(), "team-b".to_string()]);
    let in_b: Vec<Value> = gw.get_json("/system/functions?namespace=team-b").await;
    assert_eq!(in_b.len(), 1);
    assert_eq!(in_b[0]["name"], "cat");
    let r = gw
        .http
        .get(gw.url("/system/function/cat?namespace=team-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // name.namespace addressing on /function.
    let r = gw
        .http
        .post(gw.url("/function/cat.team-b"))
        .body("ns!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ns!");

    // /system/info in faas-provider's shape, as the OpenFaaS gateway reads a provider's.
    let info: Value = gw.get_json("/system/info").await;
    assert_eq!(info["provider"], "tributary-local");
    assert_eq!(info["orchestration"], "process");
    assert_eq!(info["version"]["release"], env!("CARGO_PKG_VERSION"));
    assert!(info["version"]["sha"].is_string());

    // DELETE removes the function and stops its process.
    let pid: u32 = gw.invoke("echo", "").await.headers()["x-echo-pid"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = gw.remove("echo").await;
    assert_eq!(r.status(), 202);
    assert_eq!(gw.get_code("/system/function/echo").await, 404);
    assert!(
        !tributary_tests::process_alive(pid),
        "deleted function's process {pid} still runs"
    );
    let r = gw
        .http
        .delete(gw.url("/system/functions?namespace=team-b"))
        .json(&json!({"functionName": "cat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // /healthz
    let r = gw.http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn invocation_passes_method_path_query_headers_and_body() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;

    let r = gw
        .http
        .patch(gw.url("/function/echo/orders/42?expand=items&x=%20y"))
        .header("X-Custom", "value-1")
        .header("Content-Type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-echo-method"], "PATCH");
    assert_eq!(h["x-echo-uri"], "/orders/42?expand=items&x=%20y");
    assert_eq!(h["x-echo-x-custom"], "value-1");
    assert_eq!(h["content-type"], "application/json");
    // The function is called at its own address: its Host names it, not the gateway.
    let host = h["x-echo-host"].to_str().unwrap();
    assert!(
        host.starts_with("127.0.0.1:") && !gw.url("/").contains(host),
        "{host}"
    );
    // OpenFaaS headers: generated call id and start time reach the function and the caller.
    let call_id = h["x-call-id"].to_str().unwrap().to_owned();
    assert_eq!(call_id.len(), 36, "uuid call id: {call_id}");
    assert_eq!(h["x-echo-x-call-id"].to_str().unwrap(), call_id);
    let start: u128 = h["x-start-time"].to_str().unwrap().parse().unwrap();
    assert!(
        start > 1_600_000_000_000_000_000,
        "UnixNano start time: {start}"
    );
    assert_eq!(h["x-echo-x-start-time"], h["x-start-time"]);
    let took: f64 = h["x-duration-seconds"].to_str().unwrap().parse().unwrap();
    assert!((0.0..10.0).contains(&took));
    assert_eq!(r.text().await.unwrap(), r#"{"a":1}"#);

    // A given X-Call-Id is kept.
    let r = gw
        .http
        .get(gw.url("/function/echo"))
        .header("X-Call-Id", "my-call-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-call-id"], "my-call-7");
    assert_eq!(r.headers()["x-echo-x-call-id"], "my-call-7");

    // Status codes of the function are passed through.
    let r = gw
        .http
        .post(gw.url("/function/echo"))
        .header("X-Echo-Status", "418")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 418);

    // A large body is streamed both ways intact.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = gw.invoke("echo", big.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), big.as_slice());
}

#[tokio::test]
async fn fork_mode_runs_the_command_per_request() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(fork_function("cat", "cat")).await;
    gw.deploy_ok(fork_function(
        "env",
        "sh -c 'echo \"$Http_Method $Http_Path $Http_Query $Http_X_Custom $greeting\"'",
    ))
    .await;
    let mut failing = fork_function("failing", "sh -c 'echo secret-detail >&2; exit 3'");
    failing["envVars"] = json!({"x": "y"});
    gw.deploy_ok(failing).await;

    let r = gw.invoke("cat", "round trip").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "round trip");

    let r = gw
        .http
        .put(gw.url("/function/env/a/b?q=1"))
        .header("X-Custom", "c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), "PUT /a/b q=1 c");

    // Non-zero exit: 500, and stderr goes to the log, not the body.
    let r = gw.invoke("failing", "").await;
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("secret-detail"),
        "stderr leaked into the body: {body}"
    );
    assert!(body.contains("failing"), "{body}");
    tributary_tests::eventually(
        Duration::from_secs(5),
        "stderr in the gateway log",
        || async { gw.logs().contains("secret-detail") },
    )
    .await;

    // Concurrent forks each get their own process.
    let calls = (0..20).map(|i| {
        let gw = &gw;
        async move {
            gw.invoke("cat", format!("call-{i}"))
                .await
                .text()
                .await
                .unwrap()
        }
    });
    let out = futures::future::join_all(calls).await;
    for (i, body) in out.iter().enumerate() {
        assert_eq!(body, &format!("call-{i}"));
    }
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_answers() {
    let gw =
        GatewayProcess::start_with(GatewayOptions::default().arg("--max-body-size").arg("64K"))
            .await;
    let post_raw = |body: &'static str| {
        gw.http
            .post(gw.url("/system/functions"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };

    let r = post_raw("not json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid JSON"));

    let r = post_raw(r#"{"service": 5}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("`service`"));

    let r = post_raw(r#"{"image": "x"}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("service"));

    let r = post_raw(r#"{"service": "ok", "envVars": {"a": 1}}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("envVars.a"));

    let r = post_raw(r#"{"service": "Bad_Name", "envProcess": "cat"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Bad_Name"));

    let r = post_raw(r#"{"service": "nocmd"}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("envProcess"));

    // Duplicate deploy: 409, as the REST API distinguishes create (POST) from update (PUT).
    gw.deploy_ok(fork_function("cat", "cat")).await;
    let r = gw.deploy(fork_function("cat", "cat")).await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("PUT"));

    // Unknown functions: 404 everywhere.
    assert_eq!(gw.invoke("nope", "").await.status(), 404);
    assert_eq!(gw.get_code("/system/function/nope").await, 404);
    assert_eq!(gw.scale("nope", 2).await.status(), 404);
    let r = gw
        .http
        .put(gw.url("/system/functions"))
        .json(&fork_function("nope", "cat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = gw.remove("nope").await;
    assert_eq!(r.status(), 404);
    let r = gw
        .http
        .post(gw.url("/system/scale-function/cat"))
        .body(r#"{"replicas": "three"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("replicas"));
    let r = gw
        .http
        .post(gw.url("/system/scale-function/cat"))
        .json(&json!({"serviceName": "other", "replicas": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Oversized bodies: 413 on invoke (declared length and chunked) and on the API.
    gw.deploy_ok(echo_function("echo")).await;
    let big = vec![b'x'; 100 * 1024];
    let r = gw.invoke("echo", big.clone()).await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("max_body_size"));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'y'; 16 * 1024])).collect();
    let r = gw
        .invoke(
            "cat",
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(
        r.status(),
        413,
        "chunked body over the limit to a fork function"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'y'; 16 * 1024])).collect();
    let r = gw
        .http
        .post(gw.url("/function/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        413,
        "chunked body over the limit to an http function (read whole before it is forwarded, so the \
         function cannot answer first)"
    );
    assert_eq!(
        r.headers()["connection"],
        "close",
        "the unread rest of the body makes the connection unusable"
    );
    let mut huge = fork_function("huge", "cat");
    huge["envVars"] = json!({"pad": "z".repeat(100 * 1024)});
    assert_eq!(gw.deploy(huge).await.status(), 413);
    // Within the limit still works.
    assert_eq!(gw.invoke("echo", vec![b'x'; 60 * 1024]).await.status(), 200);

    // Unknown routes and methods.
    assert_eq!(gw.get_code("/system/nothing").await, 404);
    assert_eq!(
        gw.http
            .patch(gw.url("/system/functions"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn function_that_does_not_start_is_reported() {
    let gw =
        GatewayProcess::start_with(GatewayOptions::default().arg("--startup-timeout").arg("3s"))
            .await;
    let mut broken = echo_function("broken");
    broken["envProcess"] = json!("sh -c 'echo cannot open config >&2; exit 1'");
    let r = gw.deploy(broken).await;
    assert_eq!(r.status(), 500);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("did not start") && msg.contains("cannot open config"),
        "{msg}"
    );
    let s = gw.status("broken").await;
    assert_eq!(s["availableReplicas"], 0);
    assert_eq!(s["replicas"], 1);

    let mut silent = echo_function("silent");
    silent["envProcess"] = json!("sleep 30");
    let r = gw.deploy(silent).await;
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("startup_timeout"));
    assert_eq!(gw.status("silent").await["availableReplicas"], 0);

    let r = gw
        .deploy(fork_function("missing", "/no/such/program --flag"))
        .await;
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("/no/such/program"));
    assert_eq!(gw.status("missing").await["availableReplicas"], 0);
}

#[tokio::test]
async fn upstream_timeout_gives_504() {
    let gw =
        GatewayProcess::start_with(GatewayOptions::default().env("upstream_timeout", "1s")).await;
    gw.deploy_ok(echo_function("echo")).await;
    gw.deploy_ok(fork_function("slow", "sleep 5")).await;
    let r = gw
        .http
        .post(gw.url("/function/echo"))
        .header("X-Echo-Sleep-Ms", "3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("upstream_timeout"));
    let r = gw.invoke("slow", "").await;
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn basic_auth_protects_system_routes_only() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(secrets.path().join("basic-auth-password"), "s3cr3t\n").unwrap();
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .env("basic_auth", "true")
            .env("secret_mount_path", secrets.path().to_str().unwrap()),
    )
    .await;

    let r = gw
        .http
        .get(gw.url("/system/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Restricted\""
    );
    let r = gw
        .http
        .get(gw.url("/system/functions"))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .http
        .get(gw.url("/system/info"))
        .basic_auth("root", Some("s3cr3t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw.deploy(fork_function("cat", "cat")).await;
    assert_eq!(r.status(), 401, "deploy without credentials");

    let r = gw
        .http
        .post(gw.url("/system/functions"))
        .basic_auth("admin", Some("s3cr3t"))
        .json(&fork_function("cat", "cat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    for path in [
        "/system/functions",
        "/system/function/cat",
        "/system/namespaces",
        "/system/info",
    ] {
        let r = gw
            .http
            .get(gw.url(path))
            .basic_auth("admin", Some("s3cr3t"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Invocation, health and metrics stay open, as in OpenFaaS.
    assert_eq!(gw.invoke("cat", "hi").await.status(), 200);
    assert_eq!(gw.get_code("/healthz").await, 200);
    assert_eq!(gw.get_code("/metrics").await, 200);
}

#[tokio::test]
async fn auth_off_needs_no_credentials() {
    let gw = GatewayProcess::start_with(GatewayOptions::default().env("basic_auth", "false")).await;
    assert!(gw.credentials().is_none());
    let r = gw
        .http
        .get(gw.url("/system/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn metrics_use_openfaas_names() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    for _ in 0..4 {
        gw.invoke("echo", "a").await;
    }
    gw.http
        .post(gw.url("/function/echo"))
        .header("X-Echo-Status", "503")
        .send()
        .await
        .unwrap();
    gw.scale("echo", 2).await;
    let text = gw.metrics().await;
    for expected in [
        r#"gateway_function_invocation_total{code="200",function_name="echo.openfaas-fn"} 4"#,
        r#"gateway_function_invocation_total{code="503",function_name="echo.openfaas-fn"} 1"#,
        r#"gateway_function_invocation_started{function_name="echo.openfaas-fn"} 5"#,
        r#"gateway_function_invocation_inflight{function_name="echo.openfaas-fn"} 0"#,
        r#"gateway_functions_seconds_count{code="200",function_name="echo.openfaas-fn"} 4"#,
        r#"gateway_service_count{function_name="echo.openfaas-fn"} 2"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(text.contains("# TYPE gateway_functions_seconds histogram"));
    // Requests for unknown functions add no label values.
    gw.invoke("ghost", "").await;
    let text = gw.metrics().await;
    assert!(!text.contains("ghost"));
}
