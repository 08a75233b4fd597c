//! Secure by default, against the real binary: basic auth on with generated credentials, the
//! state directory and its locked queue, functions isolated from the gateway's environment,
//! and a logger that survives a closed stderr.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::{
    GatewayOptions, GatewayProcess, eventually, fork_function, free_port, process_alive, signal,
    tributary_bin, workspace_root,
};

/// A client that sends no credentials.
fn anonymous() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn the_default_gateway_requires_generated_credentials_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut gw = GatewayProcess::start_with(GatewayOptions::default().state_dir(&state)).await;

    // The finding: anyone could deploy `sh -c "id > /tmp/pwned"` and run it.
    let pwned = dir.path().join("pwned");
    let exploit = json!({
        "service": "x", "image": "x",
        "envProcess": format!("sh -c \"id > {}\"", pwned.display()),
        "envVars": {"mode": "http"},
    });
    let r = anonymous()
        .post(gw.url("/system/functions"))
        .json(&exploit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Restricted\""
    );
    assert!(!pwned.exists(), "nothing ran");

    // The credentials were generated into the state directory, readable by this user only.
    let creds = state.join("credentials");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&creds), 0o700);
    assert_eq!(mode(&creds.join("basic-auth-password")), 0o600);
    assert_eq!(
        std::fs::read_to_string(creds.join("basic-auth-user")).unwrap(),
        "admin"
    );
    let password = std::fs::read_to_string(creds.join("basic-auth-password")).unwrap();
    assert!(password.len() >= 24, "a long random password");
    let logs = gw.logs();
    assert!(
        logs.contains("faas-cli login")
            && logs.contains(&creds.join("basic-auth-password").display().to_string()),
        "{logs}"
    );
    let r = anonymous()
        .get(gw.url("/system/functions"))
        .basic_auth("admin", Some(password.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A restart keeps them.
    gw.terminate(Duration::from_secs(10));
    drop(gw);
    let gw = GatewayProcess::start_with(GatewayOptions::default().state_dir(&state)).await;
    assert_eq!(
        std::fs::read_to_string(creds.join("basic-auth-password")).unwrap(),
        password
    );
    assert!(gw.logs().contains("generated_now=false"), "{}", gw.logs());
    assert_eq!(gw.get_code("/system/functions").await, 200);
}

#[test]
fn turning_auth_off_is_explicit_binds_loopback_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(tributary_bin())
        .args(["gateway", "--port", &port.to_string()])
        .env("basic_auth", "false")
        .env("state_dir", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("gateway listening") {
        assert!(Instant::now() < deadline, "{seen}");
        let line = lines.next().unwrap().unwrap();
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(
        seen.contains(&format!("addr=127.0.0.1:{port}")),
        "without basic auth the gateway binds loopback only:\n{seen}"
    );
    assert!(
        seen.contains("basic_auth=false") && seen.contains("deploy functions"),
        "{seen}"
    );
    assert!(
        !dir.path().join("credentials").exists(),
        "nothing generated"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_second_gateway_on_the_same_state_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _first = GatewayProcess::start_with(GatewayOptions::default().state_dir(&state)).await;
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(tributary_bin())
        .args(["gateway", "--port", "0", "--bind", "127.0.0.1"])
        .env("state_dir", &state)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another process") && err.contains("queue.db"),
        "{err}"
    );
    // Nothing lands in the working directory.
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn functions_get_their_own_environment_only() {
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .env("AWS_SECRET_ACCESS_KEY", "must-not-leak")
            .env("TZ", "Europe/Berlin"),
    )
    .await;
    let mut f = fork_function("env", "env");
    f["envVars"] = json!({"GREETING": "hi"});
    gw.deploy_ok(f).await;
    let out = reqwest::Client::new()
        .post(gw.url("/function/env"))
        .body("")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let vars: Vec<&str> = out.lines().map(|l| l.split('=').next().unwrap()).collect();
    for own in ["PATH", "fprocess", "GREETING", "TZ", "Http_Method"] {
        assert!(vars.contains(&own), "{own} missing from:\n{out}");
    }
    for gateway in [
        "AWS_SECRET_ACCESS_KEY",
        "basic_auth",
        "state_dir",
        "port",
        "RUST_LOG",
    ] {
        assert!(!vars.contains(&gateway), "{gateway} leaked:\n{out}");
    }
    assert!(out.contains("fprocess=env\n"), "{out}");
    // secret_mount_path is the function's own secrets folder, never the gateway's credentials.
    let own = gw.state_dir.join("functions/openfaas-fn/env/secrets");
    assert!(
        out.contains(&format!("secret_mount_path={}\n", own.display())),
        "{out}"
    );
}

#[tokio::test]
async fn a_closed_stderr_does_not_stop_the_gateway_from_serving_or_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let stack = workspace_root().join("examples/stack.yml");
    let mut child = Command::new(tributary_bin())
        .args([
            "up",
            "-f",
            stack.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .env("state_dir", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `tributary up 2>&1 | head -3`: read three lines, then close the pipe.
    {
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for _ in 0..3 {
            lines.next().unwrap().unwrap();
        }
    }
    let url = format!("http://127.0.0.1:{port}/function/hello");
    eventually(Duration::from_secs(20), "hello answers", || async {
        reqwest::Client::new()
            .post(&url)
            .body("x")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Logging keeps failing on the closed pipe; the gateway keeps serving and stops on SIGTERM.
    for _ in 0..5 {
        let r = reqwest::Client::new().post(&url).body("again").send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    let pid = child.id();
    signal(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn callbacks_go_only_to_the_hosts_callback_allow_lists() {
    let callbacks = tributary_tests::CallbackServer::start(0).await;
    let port = callbacks
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let gw = GatewayProcess::start_with(
        GatewayOptions::default().env("callback_allow", format!("127.0.0.1:{port}, *.example.com")),
    )
    .await;
    gw.deploy_ok(tributary_tests::echo_function("echo")).await;
    let send = |url: String| {
        let req = gw
            .http
            .post(gw.url("/async-function/echo"))
            .header("X-Callback-Url", url)
            .body("hi");
        async move { req.send().await.unwrap() }
    };
    // The cloud metadata service, another port on this machine, a look-alike host: refused.
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://127.0.0.1:{}/", free_port()),
        "http://example.com.evil.test/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let r = send(url.clone()).await;
        assert_eq!(r.status(), 400, "{url}");
        let text = r.text().await.unwrap();
        assert!(text.contains("X-Callback-Url"), "{url}: {text}");
    }
    // A listed host gets its callback.
    assert_eq!(send(callbacks.url.clone()).await.status(), 202);
    let got = callbacks.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].body, b"hi");
    assert!(gw.logs().contains("callbacks restricted"), "{}", gw.logs());

    // A bad list stops the gateway at start with a message naming the entry.
    let out = Command::new(tributary_bin())
        .args(["gateway", "--port", "0", "--callback-allow", "http://x.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http://x.com") && err.contains("callback_allow"),
        "{err}"
    );
}
