//! The `tributary` command line: `up -f stack.yml`, and clear errors for bad stack files and config.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tributary_tests::{GatewayOptions, GatewayProcess, tributary_bin, workspace_root};

#[tokio::test]
async fn up_serves_the_example_stack() {
    let stack = workspace_root().join("examples/stack.yml");
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .stack(&stack)
            .env("GREETING", "tests"),
    )
    .await;
    tributary_tests::eventually(
        Duration::from_secs(20),
        "all example functions available",
        || async {
            let list: Vec<Value> = gw.get_json("/system/functions").await;
            list.len() == 3
                && list
                    .iter()
                    .all(|f| f["availableReplicas"].as_u64() >= Some(1))
        },
    )
    .await;

    let r = gw.invoke("hello", "Ada").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with("Hello, Ada!") && text.contains("greeting from tests"),
        "{text}"
    );

    let r = gw.invoke("wordcount", "one two\nthree").await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let counts: Value = r.json().await.unwrap();
    assert_eq!(counts["words"], 3);

    let r = gw.invoke("echo", "ping").await;
    assert_eq!(r.text().await.unwrap(), "ping");
    let echo = gw.status("echo").await;
    assert_eq!(echo["replicas"], 2);
    assert_eq!(echo["annotations"]["topic"], "payments,refunds");
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    // Each run gets its own state directory, unless the test names one.
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(tributary_bin())
        .args(args)
        .env("state_dir", state.path())
        .envs(env.iter().copied())
        .output()
        .expect("run tributary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_stack_files_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad_type = dir.path().join("bad-type.yml");
    std::fs::write(
        &bad_type,
        "functions:\n  hello:\n    fprocess: cat\n    labels: [a, b]\n",
    )
    .unwrap();
    let (code, out) = run(
        &["up", "-f", bad_type.to_str().unwrap(), "--port", "0"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("bad-type.yml:4:") && out.contains("functions.hello.labels"),
        "{out}"
    );

    let no_cmd = dir.path().join("no-cmd.yml");
    std::fs::write(
        &no_cmd,
        "functions:\n  ok:\n    fprocess: cat\n  hello:\n    image: x\n",
    )
    .unwrap();
    let (code, out) = run(&["up", "-f", no_cmd.to_str().unwrap(), "--port", "0"], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("no-cmd.yml:4:") && out.contains("fprocess"),
        "{out}"
    );

    let misspelt = dir.path().join("misspelt.yml");
    std::fs::write(
        &misspelt,
        "functions:\n  hello:\n    fprocess: cat\n    enviroment:\n      a: b\n",
    )
    .unwrap();
    let (code, out) = run(
        &["up", "-f", misspelt.to_str().unwrap(), "--port", "0"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("unknown field `enviroment` (did you mean `environment`?)")
            && out.contains("known fields:"),
        "{out}"
    );

    // A stack file gets the API's limits: it cannot start a million replicas.
    let greedy = dir.path().join("greedy.yml");
    std::fs::write(
        &greedy,
        "functions:\n  hello:\n    fprocess: cat\n    labels:\n      com.openfaas.scale.min: \"1000000\"\n",
    )
    .unwrap();
    let (code, out) = run(&["up", "-f", greedy.to_str().unwrap(), "--port", "0"], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("greedy.yml: function \"hello\"") && out.contains("max_replicas"),
        "{out}"
    );

    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "functions:\n  hello: [\n").unwrap();
    let (code, out) = run(&["up", "-f", broken.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("broken.yml:"), "{out}");

    let (code, out) = run(&["up", "-f", "/no/such/stack.yml"], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("/no/such/stack.yml") && out.contains("cannot read"),
        "{out}"
    );
}

#[test]
fn bad_config_is_rejected_before_serving() {
    let (code, out) = run(&["gateway", "--upstream-timeout", "banana"], &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains("upstream-timeout") && out.contains("banana"),
        "{out}"
    );

    let (code, out) = run(&["gateway"], &[("max_body_size", "10X")]);
    assert_eq!(code, 2);
    assert!(out.contains("10X"), "{out}");

    let (code, out) = run(&["gateway"], &[("basic_auth", "maybe")]);
    assert_eq!(code, 2, "{out}");

    let empty = tempfile::tempdir().unwrap();
    let (code, out) = run(
        &["gateway", "--port", "0"],
        &[
            ("basic_auth", "true"),
            ("secret_mount_path", empty.path().to_str().unwrap()),
        ],
    );
    assert_eq!(code, 1);
    assert!(out.contains("basic-auth-user"), "{out}");

    // A state directory that cannot be made (a file stands where it would go).
    let file = tempfile::NamedTempFile::new().unwrap();
    let (code, out) = run(
        &["gateway", "--port", "0"],
        &[("state_dir", file.path().join("state").to_str().unwrap())],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("state directory") && out.contains("set state_dir to a writable folder"),
        "{out}"
    );

    // The async queue cannot be opened: an unreachable NATS server, an unwritable queue file.
    let nats_port = tributary_tests::free_port().to_string();
    let (code, out) = run(
        &["gateway", "--port", "0"],
        &[("nats_url", &format!("nats://127.0.0.1:{nats_port}"))],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("NATS JetStream queue") && out.contains("cannot connect"),
        "{out}"
    );
    let (code, out) = run(
        &[
            "gateway",
            "--port",
            "0",
            "--queue-path",
            "/proc/no/such/queue.db",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("embedded queue (/proc/no/such/queue.db)"),
        "{out}"
    );

    // A port already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, out) = run(&["gateway", "--bind", "127.0.0.1", "--port", &port], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("cannot listen"), "{out}");
}

#[tokio::test]
async fn up_runs_the_cron_connector_on_its_functions() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("ticks.jsonl");
    let script = tributary_tests::recorder_script();
    let stack = dir.path().join("stack.yml");
    std::fs::write(
        &stack,
        format!(
            "functions:\n  ticker:\n    fprocess: python3 {}\n    environment:\n      mode: http\n      RECORD_FILE: {}\n    annotations:\n      topic: cron-function\n      schedule: \"* * * * * *\"\n",
            script.display(),
            record.display()
        ),
    )
    .unwrap();
    let gw = GatewayProcess::start_with(GatewayOptions::default().stack(&stack)).await;
    tributary_tests::eventually(
        Duration::from_secs(15),
        "cron firings from tributary up",
        || async { tributary_tests::read_records(&record).len() >= 2 },
    )
    .await;
    let r = &tributary_tests::read_records(&record)[0];
    assert_eq!(r["headers"]["x-connector"], "cron-connector");
    assert!(gw.logs().contains("function scheduled"));
}

/// Every `tributary` process gives memory back once it is quiet: its scavenger logs the resident
/// set before and after, the after is lower, and the code it unmapped runs again on demand.
#[tokio::test]
async fn a_quiet_process_returns_memory_and_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let port = tributary_tests::free_port();
    let mut cmd = Command::new(tributary_bin());
    cmd.args(["echo", "--port", &port.to_string()])
        .env("RUST_LOG", "info,tributary_cli::memory=debug");
    let (mut child, log) = tributary_tests::spawn_logged(&mut cmd, dir.path(), "echo");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    tributary_tests::eventually(
        Duration::from_secs(20),
        "the scavenger's first scavenge",
        || async { logs().contains("memory returned to the system") },
    )
    .await;
    let text = logs();
    let line = text
        .lines()
        .find(|l| l.contains("memory returned to the system"))
        .unwrap();
    let figure = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (before, after) = (figure("before_kib"), figure("after_kib"));
    assert!(after < before, "{line}");
    // Served after the release: the echo's code is mapped again from the page cache.
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/"))
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "still here");
    let _ = child.kill();
    let _ = child.wait();
}

/// The option lines (`--flag <VALUE>  [env: name=]`) of a `--help` text, sorted.
fn option_lines(help: &str) -> Vec<String> {
    let mut lines: Vec<String> = help
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('-'))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn each_connector_program_takes_the_settings_of_its_subcommand() {
    for kind in ["cron", "nats", "kafka", "sqs"] {
        let program = tributary_tests::connector_bin(kind);
        let own = Command::new(&program).arg("--help").output().unwrap();
        assert!(own.status.success(), "{kind}: {own:?}");
        let own = String::from_utf8_lossy(&own.stdout).into_owned();
        let (code, sub) = run(&["connector", kind, "--help"], &[]);
        assert_eq!(code, 0, "{sub}");
        assert!(
            own.contains(&format!("Usage: tributary-{kind}-connector [OPTIONS]")),
            "{own}"
        );
        let options = option_lines(&own);
        assert!(options.len() > 10, "{kind}: {options:?}");
        assert_eq!(options, option_lines(&sub), "{kind}");
    }
}

#[test]
fn a_connector_program_rejects_bad_settings_with_a_clear_error() {
    let kafka = tributary_tests::connector_bin("kafka");
    let state = tempfile::tempdir().unwrap();
    let out = |env: &[(&str, &str)]| {
        let out = Command::new(&kafka)
            .env("state_dir", state.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    // A bad value is named by its variable, before anything starts.
    let (code, text) = out(&[("max_inflight", "lots")]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("max_inflight") && text.contains("lots"),
        "{text}"
    );
    // A setting that parses but cannot work: an error saying what to fix, status 1.
    let (code, text) = out(&[("broker_hosts", "kafka-without-port")]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("error: ") && text.contains("has no port"),
        "{text}"
    );
}
