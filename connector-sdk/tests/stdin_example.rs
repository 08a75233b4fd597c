//! The stdin example connector (`examples/stdin.rs`) against a real gateway, written with the
//! SDK's own test harness (feature `test-util`) as a connector author would write it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use tributary_connector_sdk::test_util::{GatewayProcess, record_bodies, recorder_function};

/// The example binary `cargo test` builds for this package.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = profile.join("examples/stdin");
    assert!(
        example.exists(),
        "{} is built by cargo test",
        example.display()
    );
    example
}

/// Runs the example with `lines` on its stdin until it has delivered them and exited.
async fn run_example(gateway: &GatewayProcess, topic: &str, lines: usize) -> Output {
    let mut child = Command::new(example())
        .env("gateway_url", &gateway.base)
        .envs(gateway.auth_env())
        .env("metrics_port", "0")
        .env("max_retries", "0")
        .env("topic", topic)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..lines {
            writeln!(stdin, "line {i}").unwrap();
        }
    }
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn stdin_example_delivers_every_line_and_reports_dead_letters() {
    let gateway = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("lines.jsonl");
    gateway
        .deploy_ok(recorder_function("lines", "lines", &record, &[]))
        .await;
    let rejected = dir.path().join("rejected.jsonl");
    gateway
        .deploy_ok(recorder_function(
            "strict",
            "strict",
            &rejected,
            &[("ALWAYS_STATUS", "400")],
        ))
        .await;

    let out = run_example(&gateway, "lines", 25).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bodies = record_bodies(&record);
    bodies.sort_by_key(|b| b[5..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..25).map(|i| format!("line {i}")).collect();
    assert_eq!(bodies, expected, "every line once");

    // A function that refuses every line: each one is reported as a dead letter.
    let out = run_example(&gateway, "strict", 3).await;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in 1..=3 {
        assert!(
            stderr.contains(&format!("line {n} failed")) && stderr.contains("400"),
            "{stderr}"
        );
    }
    assert_eq!(record_bodies(&rejected).len(), 3);
}
