//! The cron connector as a real process (`tributary connector cron`) against a real gateway.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{
    ConnectorProcess, GatewayProcess, eventually, metric_value, read_records, recorder_function,
};

fn scheduled(name: &str, file: &std::path::Path, schedule: &str, env: &[(&str, &str)]) -> Value {
    let mut d = recorder_function(name, "payments,cron-function", file, env);
    d["annotations"]["schedule"] = json!(schedule);
    d
}

async fn records_reach(file: &std::path::Path, n: usize, limit: Duration) -> Vec<Value> {
    eventually(limit, &format!("{n} invocations recorded"), || async {
        read_records(file).len() >= n
    })
    .await;
    read_records(file)
}

#[tokio::test]
async fn fires_every_second_with_cron_headers() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tick.jsonl");
    gw.deploy_ok(scheduled("tick", &f, "* * * * * *", &[]))
        .await;
    // On a multi-threaded runtime (the other tests run the default, one thread).
    let cron = ConnectorProcess::start(
        "cron",
        &gw,
        &[("rebuild_interval", "1s"), ("worker_threads", "2")],
    );
    let records = records_reach(&f, 3, Duration::from_secs(15)).await;
    let mut scheduled_times = Vec::new();
    for r in &records {
        let h = &r["headers"];
        assert_eq!(h["x-topic"], "cron-function");
        assert_eq!(h["x-connector"], "cron-connector");
        let t =
            chrono::DateTime::parse_from_rfc3339(h["x-scheduled-time"].as_str().unwrap()).unwrap();
        assert_eq!(
            t.timestamp_subsec_millis(),
            0,
            "fires on whole seconds: {t}"
        );
        scheduled_times.push(t);
    }
    for pair in scheduled_times.windows(2) {
        assert!(
            pair[1] > pair[0],
            "scheduled times increase: {scheduled_times:?}"
        );
    }
    assert!(
        cron.logs().contains("function scheduled"),
        "{}",
        cron.logs()
    );
    let m = cron.metrics().await;
    assert!(
        metric_value(&m, r#"cron_firings_total{function="tick"}"#) >= 3.0,
        "{m}"
    );
    assert_eq!(metric_value(&m, "cron_scheduled_functions"), 1.0);
}

#[tokio::test]
async fn schedule_changes_and_removals_are_picked_up() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("job.jsonl");
    // Starts with a schedule that will not fire during the test.
    gw.deploy_ok(scheduled("job", &f, "0 0 1 1 *", &[])).await;
    let cron = ConnectorProcess::start("cron", &gw, &[("rebuild_interval", "500ms")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(read_records(&f).is_empty());

    // Update to every second: picked up within a rebuild interval.
    let r = gw
        .http
        .put(gw.url("/system/functions"))
        .json(&scheduled("job", &f, "@every 1s", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    records_reach(&f, 2, Duration::from_secs(10)).await;

    // Removal: it stops firing.
    let r = gw.remove("job").await;
    assert_eq!(r.status(), 202);
    eventually(Duration::from_secs(5), "unscheduled", || async {
        cron.logs().contains("function unscheduled")
    })
    .await;
    let after_removal = read_records(&f).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        read_records(&f).len() <= after_removal + 1,
        "at most one firing was already in flight"
    );

    // A new function shows up too.
    let g = dir.path().join("late.jsonl");
    gw.deploy_ok(scheduled("late", &g, "*/1 * * * * *", &[]))
        .await;
    records_reach(&g, 1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn bad_schedules_are_rejected_clearly_and_others_keep_running() {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good.jsonl"), dir.path().join("bad.jsonl"));
    gw.deploy_ok(scheduled("good", &good, "* * * * * *", &[]))
        .await;
    gw.deploy_ok(scheduled("broken", &bad, "every other tuesday", &[]))
        .await;
    let mut d = scheduled("zoned", &bad, "0 9 * * *", &[]);
    d["annotations"]["com.openfaas.schedule.timezone"] = json!("Mars/Olympus_Mons");
    gw.deploy_ok(d).await;
    let mut cron = ConnectorProcess::start("cron", &gw, &[("rebuild_interval", "300ms")]);
    records_reach(&good, 2, Duration::from_secs(10)).await;
    let logs = cron.logs();
    let broken_lines = logs
        .lines()
        .filter(|l| l.contains("invalid schedule") && l.contains("function=broken"))
        .count();
    assert_eq!(broken_lines, 1, "logged once, not every rebuild:\n{logs}");
    assert!(logs.contains("every other tuesday"), "{logs}");
    assert!(
        logs.contains("Mars/Olympus_Mons") && logs.contains("unknown time zone"),
        "{logs}"
    );
    assert!(read_records(&bad).is_empty());
    let m = cron.metrics().await;
    assert_eq!(
        metric_value(&m, r#"cron_schedule_errors_total{function="broken"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, r#"cron_schedule_errors_total{function="zoned"}"#),
        1.0,
        "{m}"
    );
    assert!(cron.terminate(Duration::from_secs(10)).success());
}

/// A gateway with `slow` scheduled every second, each run taking 2.5 s.
async fn slow_every_second() -> (GatewayProcess, tempfile::TempDir) {
    let gw = GatewayProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("slow.jsonl");
    gw.deploy_ok(scheduled(
        "slow",
        &f,
        "* * * * * *",
        &[("DELAY_MS", "2500")],
    ))
    .await;
    (gw, dir)
}

#[tokio::test]
async fn overlapping_runs_are_skipped() {
    let (gw, dir) = slow_every_second().await;
    let f = dir.path().join("slow.jsonl");
    let cron = ConnectorProcess::start("cron", &gw, &[("rebuild_interval", "1s")]);
    records_reach(&f, 2, Duration::from_secs(15)).await;
    let records = read_records(&f);
    assert!(
        records.iter().all(|r| r["inflight"] == 1),
        "never two runs at once: {records:?}"
    );
    let m = cron.metrics().await;
    assert!(
        metric_value(&m, r#"cron_skipped_total{function="slow"}"#) >= 2.0,
        "{m}"
    );
    assert!(cron.logs().contains("previous run still in flight"));
}

#[tokio::test]
async fn overlap_can_be_allowed() {
    let (gw, dir) = slow_every_second().await;
    let f = dir.path().join("slow.jsonl");
    let _cron = ConnectorProcess::start(
        "cron",
        &gw,
        &[("rebuild_interval", "1s"), ("allow_overlap", "true")],
    );
    let records = records_reach(&f, 3, Duration::from_secs(15)).await;
    assert!(
        records.iter().any(|r| r["inflight"].as_i64().unwrap() > 1),
        "runs overlapped: {records:?}"
    );
}

#[test]
fn bad_connector_config_fails_fast() {
    let out = std::process::Command::new(tributary_tests::tributary_bin())
        .args(["connector", "cron"])
        .env("gateway_url", "gateway:8080")
        .output()
        .unwrap();
    // A value that does not parse is a usage error (2, as for the gateway), naming the variable.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gateway_url") && err.contains("http://"),
        "{err}"
    );
    let out = std::process::Command::new(tributary_tests::tributary_bin())
        .args(["connector", "cron", "--cron-timezone"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let out = std::process::Command::new(tributary_tests::tributary_bin())
        .args(["connector", "cron"])
        .env("cron_timezone", "Nowhere/Special")
        .env("metrics_port", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid cron_timezone=") && err.contains("Nowhere/Special"),
        "{err}"
    );
    for threads in ["0", "many"] {
        let out = std::process::Command::new(tributary_tests::tributary_bin())
            .args(["connector", "cron"])
            .env("worker_threads", threads)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("worker_threads") && err.contains(threads),
            "{err}"
        );
    }
}
