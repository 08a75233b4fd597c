//! `/system/secrets` and `/system/logs` on the local provider, against the real binary: secrets
//! kept private in the state directory, each function given only the ones it names, and the
//! output of its processes captured, tailed and followed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tributary_tests::{GatewayOptions, GatewayProcess, eventually, fork_function};

async fn secret(gw: &GatewayProcess, method: reqwest::Method, body: Value) -> (u16, String) {
    let r = gw
        .http
        .request(method, gw.url("/system/secrets"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn secret_names(gw: &GatewayProcess) -> Vec<String> {
    let list: Vec<Value> = gw.get_json("/system/secrets").await;
    for s in &list {
        assert!(
            s.get("value").is_none() && s.get("rawValue").is_none(),
            "{s}"
        );
    }
    list.iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn secrets_are_kept_private_and_each_function_sees_only_its_own() {
    let gw = GatewayProcess::start().await;
    use reqwest::Method;
    // Without credentials: nothing.
    let r = reqwest::Client::new()
        .get(gw.url("/system/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert_eq!(
        secret(&gw, Method::POST, json!({"name": "db", "value": "pw1"}))
            .await
            .0,
        201
    );
    // rawValue is base64 bytes, as Go encodes []byte.
    assert_eq!(
        secret(
            &gw,
            Method::POST,
            json!({"name": "api", "rawValue": "AAEC/w=="})
        )
        .await
        .0,
        201
    );
    let (code, text) = secret(&gw, Method::POST, json!({"name": "db", "value": "x"})).await;
    assert_eq!(code, 409, "{text}");
    for bad in [
        json!({"name": "../escape", "value": "x"}),
        json!({"name": "db", "rawValue": "!!"}),
        json!({"value": "x"}),
    ] {
        let (code, text) = secret(&gw, Method::POST, bad.clone()).await;
        assert_eq!(code, 400, "{bad}: {text}");
    }
    assert!(!gw.state_dir.join("escape").exists() && !gw.state_dir.join("secrets/escape").exists());
    let (code, text) = secret(&gw, Method::PUT, json!({"name": "ghost", "value": "x"})).await;
    assert_eq!(code, 404, "{text}");
    assert_eq!(secret_names(&gw).await, ["api", "db"]);

    // Stored under the state directory, readable by the gateway's user only.
    let file = gw.state_dir.join("secrets/openfaas-fn/api");
    assert_eq!(std::fs::read(&file).unwrap(), [0, 1, 2, 255]);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A function naming a missing secret is refused, as OpenFaaS providers answer.
    let mut missing = fork_function("lost", "cat");
    missing["secrets"] = json!(["db", "nope"]);
    let r = gw.deploy(missing).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("nope"));

    // A function sees the secrets it names, in its own folder, and nothing else.
    let mut reader = fork_function(
        "reader",
        r#"sh -c 'cat "$secret_mount_path/db"; echo; ls "$secret_mount_path"; env'"#,
    );
    reader["secrets"] = json!(["db"]);
    gw.deploy_ok(reader).await;
    let out = gw.invoke("reader", "").await.text().await.unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pw1"));
    assert_eq!(lines.next(), Some("db"), "only its own secret: {out}");
    assert!(out.contains("secret_mount_path="), "{out}");
    assert!(
        !out.contains("/secrets/openfaas-fn"),
        "never the store itself: {out}"
    );

    // An update reaches the functions that use it.
    assert_eq!(
        secret(&gw, Method::PUT, json!({"name": "db", "value": "pw2"}))
            .await
            .0,
        202
    );
    let out = gw.invoke("reader", "").await.text().await.unwrap();
    assert!(out.starts_with("pw2\n"), "{out}");

    // Deleting the secret and the function removes them.
    assert_eq!(
        secret(&gw, Method::DELETE, json!({"name": "db"})).await.0,
        202
    );
    assert_eq!(
        secret(&gw, Method::DELETE, json!({"name": "db"})).await.0,
        404
    );
    assert_eq!(secret_names(&gw).await, ["api"]);
    let r = gw.remove("reader").await;
    assert_eq!(r.status(), 202);
    assert!(!gw.state_dir.join("functions/openfaas-fn/reader").exists());
}

async fn log_lines(gw: &GatewayProcess, query: &str) -> (u16, Vec<Value>) {
    let r = gw
        .http
        .get(gw.url(&format!("/system/logs?{query}")))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    if code == 200 {
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    }
    let text = r.text().await.unwrap();
    if code != 200 {
        return (code, vec![json!(text)]);
    }
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (code, lines)
}

#[tokio::test]
async fn function_output_is_captured_tailed_followed_and_kept_across_restarts() {
    let state = tempfile::tempdir().unwrap();
    let options = || GatewayOptions::default().state_dir(state.path());
    let gw = GatewayProcess::start_with(options()).await;
    // Fork mode: stderr is the log (stdout is the answer).
    gw.deploy_ok(fork_function(
        "talker",
        r#"sh -c 'echo "got $(cat)" >&2; echo ok'"#,
    ))
    .await;
    for i in 0..3 {
        assert_eq!(gw.invoke("talker", format!("call {i}")).await.status(), 200);
    }
    // HTTP mode: both stdout and stderr of each replica (python's server logs requests).
    let http = json!({
        "service": "server", "image": "x",
        "envProcess": "sh -c 'echo starting; exec python3 -m http.server --bind 127.0.0.1 $PORT'",
        "envVars": {"mode": "http"},
    });
    gw.deploy_ok(http).await;
    assert_eq!(
        gw.invoke("server", "").await.status(),
        501,
        "python answers POST with 501"
    );

    eventually(Duration::from_secs(5), "three talker lines", || async {
        log_lines(&gw, "name=talker").await.1.len() == 3
    })
    .await;
    let (_, lines) = log_lines(&gw, "name=talker").await;
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["name"], "talker");
        assert_eq!(line["namespace"], "openfaas-fn");
        assert_eq!(line["text"], format!("got call {i}"));
        assert!(line["instance"].as_str().unwrap().starts_with("talker-"));
        chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).unwrap();
    }
    let server_texts = || async {
        let (_, l) = log_lines(&gw, "name=server").await;
        l.iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>()
    };
    eventually(
        Duration::from_secs(5),
        "the server's stdout and stderr",
        || async {
            let texts = server_texts().await;
            texts.iter().any(|t| t == "starting")
                && texts.iter().any(|t| t.contains("\"POST / HTTP/1.1\" 501"))
        },
    )
    .await;

    // tail and since.
    let (_, tail) = log_lines(&gw, "name=talker&tail=1").await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0]["text"], "got call 2");
    let since = lines[1]["timestamp"].as_str().unwrap();
    let (_, newer) = log_lines(&gw, &format!("name=talker&since={}", urlencode(since))).await;
    assert_eq!(newer.len(), 2);
    let (_, all) = log_lines(&gw, "name=talker&tail=-1").await;
    assert_eq!(all.len(), 3);

    // Bad queries are 4xx with a message.
    for (query, code) in [
        ("", 400),
        ("name=ghost", 404),
        ("name=talker&since=yesterday", 400),
        ("name=talker&tail=x", 400),
        ("name=talker&follow=maybe", 400),
    ] {
        let (got, body) = log_lines(&gw, query).await;
        assert_eq!(got, code, "{query}: {body:?}");
    }

    // follow: the kept lines, then new ones as they come.
    let r = gw
        .http
        .get(gw.url("/system/logs?name=talker&tail=1&follow=true"))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    let mut invoked = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("got live") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the new line in time")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
        if !invoked && seen.contains("got call 2") {
            invoked = true;
            assert_eq!(gw.invoke("talker", "live").await.status(), 200);
        }
    }
    assert_eq!(seen.lines().count(), 2, "{seen}");

    // A follower still connected does not hold up shutdown (the grace is 10 s).
    let mut gw = gw;
    let started = std::time::Instant::now();
    assert!(gw.terminate(Duration::from_secs(20)).success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stream);

    // Kept in the state directory: a restarted gateway still has them.
    drop(gw);
    let gw = GatewayProcess::start_with(options()).await;
    gw.deploy_ok(fork_function("talker", "cat")).await;
    let (_, kept) = log_lines(&gw, "name=talker").await;
    assert_eq!(kept.len(), 4, "{kept:?}");
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}
