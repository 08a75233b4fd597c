//! Limits against the real binary: replicas, fork-mode concurrency and output, values a
//! process environment cannot hold, and clients that go away mid-call.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use serde_json::json;
use tributary_tests::{GatewayOptions, GatewayProcess, eventually, fork_function};

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn replicas_are_capped() {
    let gw = GatewayProcess::start_with(GatewayOptions::default().env("max_replicas", "5")).await;
    let mut huge = fork_function("huge", "cat");
    huge["labels"] = json!({"com.openfaas.scale.min": "1000000"});
    let r = gw.deploy(huge).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("max_replicas"));

    let mut capped = fork_function("capped", "cat");
    capped["labels"] = json!({"com.openfaas.scale.max": "3"});
    gw.deploy_ok(capped).await;
    assert_eq!(gw.scale("capped", 3).await.status(), 202);
    let r = gw.scale("capped", 4).await;
    assert_eq!(r.status(), 400, "above its com.openfaas.scale.max");
    gw.deploy_ok(fork_function("plain", "cat")).await;
    assert_eq!(gw.scale("plain", 5).await.status(), 202);
    assert_eq!(
        gw.scale("plain", 100).await.status(),
        400,
        "above max_replicas"
    );
    assert_eq!(gw.status("plain").await["replicas"], 5);
}

#[tokio::test]
async fn bad_values_are_refused_at_deploy() {
    let gw = GatewayProcess::start().await;
    for (what, d) in [
        (
            "NUL in envProcess",
            json!({"service": "a", "envProcess": "cat\u{0}x"}),
        ),
        (
            "NUL in envVars",
            json!({"service": "a", "envProcess": "cat", "envVars": {"K": "v\u{0}"}}),
        ),
        (
            "= in a name",
            json!({"service": "a", "envProcess": "cat", "envVars": {"A=B": "v"}}),
        ),
        (
            "unknown mode",
            json!({"service": "a", "envProcess": "cat", "envVars": {"mode": "htpp"}}),
        ),
        (
            "bad max_inflight",
            json!({"service": "a", "envProcess": "cat", "envVars": {"max_inflight": "lots"}}),
        ),
    ] {
        let r = gw.deploy(d).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 400, "{what}: {body}");
    }
    assert!(
        gw.get_json::<Vec<serde_json::Value>>("/system/functions")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn fork_functions_run_at_most_max_inflight_requests_at_once() {
    let gw = GatewayProcess::start().await;
    let mut f = fork_function("slow", "sh -c 'sleep 1; cat'");
    f["envVars"] = json!({"max_inflight": "2"});
    gw.deploy_ok(f).await;
    let calls = (0..6).map(|i| {
        let http = gw.http.clone();
        let url = gw.url("/function/slow");
        async move {
            http.post(url)
                .body(format!("{i}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let mut statuses = futures::future::join_all(calls).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429], "as the watchdog");
}

#[tokio::test]
async fn fork_output_over_max_body_size_is_cut_off() {
    let gw = GatewayProcess::start_with(GatewayOptions::default().env("max_body_size", "1M")).await;
    gw.deploy_ok(fork_function("flood", "head -c 400000000 /dev/zero"))
        .await;
    let before = rss_kb(gw.pid());
    let r = gw.invoke("flood", "").await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("max_body_size"));
    let after = rss_kb(gw.pid());
    assert!(
        after < before + 50 * 1024,
        "the gateway grew from {before} kB to {after} kB"
    );
    eventually(Duration::from_secs(5), "the flood is stopped", || async {
        processes_with("head -c 400000000").is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_client_that_goes_away_gets_the_whole_process_group_killed() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(fork_function("stuck", "sh -c 'sleep 27.125; cat'"))
        .await;
    let call = tokio::spawn(gw.http.post(gw.url("/function/stuck")).body("x").send());
    eventually(Duration::from_secs(10), "the command runs", || async {
        !processes_with("sleep 27.125").is_empty()
    })
    .await;
    // The client goes away mid-call.
    call.abort();
    assert!(call.await.is_err(), "aborted");
    eventually(
        Duration::from_secs(5),
        "the command's children are gone",
        || async { processes_with("sleep 27.125").is_empty() },
    )
    .await;
}
