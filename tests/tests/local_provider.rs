//! The local provider's process management, observed from outside: replicas, restarts,
//! scale from zero, and no orphan processes after shutdown.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use tributary_tests::{GatewayProcess, echo_function, eventually, process_alive, signal};

async fn pid_of(gw: &GatewayProcess, name: &str) -> u32 {
    let r = gw.invoke(name, "").await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    r.headers()["x-echo-pid"].to_str().unwrap().parse().unwrap()
}

async fn pids_seen(gw: &GatewayProcess, name: &str, calls: usize) -> HashSet<u32> {
    let mut pids = HashSet::new();
    for _ in 0..calls {
        pids.insert(pid_of(gw, name).await);
    }
    pids
}

#[tokio::test]
async fn scales_to_three_replicas_and_back() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    assert_eq!(pids_seen(&gw, "echo", 6).await.len(), 1);

    let r = gw.scale("echo", 3).await;
    assert_eq!(r.status(), 202);
    gw.wait_available("echo", 3).await;
    assert_eq!(gw.status("echo").await["replicas"], 3);
    let three = pids_seen(&gw, "echo", 30).await;
    assert_eq!(
        three.len(),
        3,
        "requests are spread over all replicas: {three:?}"
    );

    assert_eq!(gw.scale("echo", 1).await.status(), 202);
    gw.wait_available("echo", 1).await;
    let one = pids_seen(&gw, "echo", 10).await;
    assert_eq!(one.len(), 1);
    for pid in three.difference(&one) {
        assert!(!process_alive(*pid), "scaled-down replica {pid} still runs");
    }
}

#[tokio::test]
async fn killed_replica_is_restarted() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    let old = pid_of(&gw, "echo").await;
    signal(old, Signal::SIGKILL);
    eventually(Duration::from_secs(10), "old replica gone", || async {
        !process_alive(old)
    })
    .await;
    eventually(Duration::from_secs(20), "a new replica serving", || async {
        let r = gw.invoke("echo", "").await;
        r.status() == 200 && r.headers()["x-echo-pid"].to_str().unwrap() != old.to_string()
    })
    .await;
    gw.wait_available("echo", 1).await;
    assert!(gw.logs().contains("restarting replica"), "{}", gw.logs());
    // Killing it again restarts it again (backoff grows but stays short).
    let second = pid_of(&gw, "echo").await;
    signal(second, Signal::SIGKILL);
    eventually(
        Duration::from_secs(20),
        "a third replica serving",
        || async {
            let r = gw.invoke("echo", "").await;
            r.status() == 200 && r.headers()["x-echo-pid"].to_str().unwrap() != second.to_string()
        },
    )
    .await;
}

#[tokio::test]
async fn scaled_to_zero_function_starts_on_demand() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    let pid = pid_of(&gw, "echo").await;
    assert_eq!(gw.scale("echo", 0).await.status(), 202);
    gw.wait_available("echo", 0).await;
    assert!(!process_alive(pid));
    // The request is held until a replica is ready, then served.
    let r = gw.invoke("echo", "wake up").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "wake up");
    assert_eq!(gw.status("echo").await["replicas"], 1);
}

#[tokio::test]
async fn scale_min_label_sets_initial_replicas() {
    let gw = GatewayProcess::start().await;
    let mut d = echo_function("echo");
    d["labels"] = json!({"com.openfaas.scale.min": "2"});
    gw.deploy_ok(d).await;
    let s = gw.status("echo").await;
    assert_eq!(s["replicas"], 2);
    assert_eq!(s["availableReplicas"], 2);
}

#[tokio::test]
async fn sigterm_stops_every_function_process() {
    let mut gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    assert_eq!(gw.scale("echo", 2).await.status(), 202);
    gw.wait_available("echo", 2).await;
    let pids = pids_seen(&gw, "echo", 10).await;
    assert_eq!(pids.len(), 2);
    let status = gw.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "gateway exit status {status}:\n{}",
        gw.logs()
    );
    for pid in pids {
        assert!(
            !process_alive(pid),
            "function process {pid} outlived the gateway"
        );
    }
    assert!(gw.logs().contains("all function processes stopped"));
}

#[tokio::test]
async fn sigkill_of_the_gateway_leaves_no_orphans() {
    let mut gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    let pid = pid_of(&gw, "echo").await;
    gw.kill();
    eventually(
        Duration::from_secs(5),
        "function process to die with the gateway",
        || async { !process_alive(pid) },
    )
    .await;
}
