//! Compatibility with OpenFaaS's own programs (from `../shared/openfaas/bin`; each test says it
//! is skipped when they are absent): the real faas-cli logs in, manages secrets, deploys with a
//! secret, invokes and reads logs; the real OpenFaaS gateway uses Tributary as its provider.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use tributary_tests::{GatewayProcess, faas_cli, openfaas_program, output_text, spawn_logged};

#[tokio::test]
async fn faas_cli_logs_in_manages_secrets_deploys_with_one_and_reads_logs() {
    let Some(cli) = openfaas_program("faas-cli") else {
        return;
    };
    let gw = GatewayProcess::start().await;
    let home = tempfile::tempdir().unwrap();
    let password = gw.credentials().unwrap().password.clone();
    let run = |args: &[&str], stdin: &str| faas_cli(&cli, home.path(), &gw.base, args, stdin);

    // Without logging in, faas-cli is refused.
    let out = run(&["secret", "list"], "");
    assert!(!out.status.success(), "{}", output_text(&out));

    let out = run(
        &["login", "--username", "admin", "--password-stdin"],
        &password,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(
        &["login", "--username", "admin", "--password-stdin"],
        "wrong",
    );
    assert!(
        !out.status.success(),
        "a wrong password fails: {}",
        output_text(&out)
    );
    let out = run(
        &["login", "--username", "admin", "--password-stdin"],
        &password,
    );
    assert!(out.status.success(), "{}", output_text(&out));

    let out = run(&["secret", "create", "db", "--from-literal", "pw1"], "");
    assert!(
        out.status.success() && output_text(&out).contains("201"),
        "{}",
        output_text(&out)
    );
    let out = run(&["secret", "create", "db", "--from-literal", "x"], "");
    assert!(
        output_text(&out).contains("already exists"),
        "{}",
        output_text(&out)
    );
    let out = run(&["secret", "update", "db", "--from-literal", "pw2"], "");
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["secret", "create", "api"], "from stdin\n");
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["secret", "list"], "");
    let listed = output_text(&out);
    assert!(listed.contains("db") && listed.contains("api"), "{listed}");

    let out = run(
        &[
            "deploy",
            "--name",
            "lost",
            "--image",
            "x",
            "--fprocess",
            "cat",
            "--secret",
            "nope",
        ],
        "",
    );
    assert!(
        !out.status.success(),
        "a missing secret is refused: {}",
        output_text(&out)
    );
    assert!(output_text(&out).contains("nope"), "{}", output_text(&out));

    let out = run(
        &[
            "deploy",
            "--name",
            "reader",
            "--image",
            "x",
            "--fprocess",
            r#"sh -c 'cat "$secret_mount_path/db"; echo "read by $(cat)" >&2'"#,
            "--secret",
            "db",
        ],
        "",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["invoke", "reader"], "faas-cli");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pw2");

    let out = run(&["logs", "reader", "--tail=false"], "");
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("read by faas-cli"),
        "{}",
        output_text(&out)
    );
    let out = run(&["invoke", "reader"], "again");
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(
        &[
            "logs",
            "reader",
            "--tail=false",
            "--lines=1",
            "--output=json",
        ],
        "",
    );
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(json.lines().count(), 1, "{}", output_text(&out));
    assert!(
        json.contains("read by again") && json.contains("\"instance\""),
        "{json}"
    );

    let out = run(&["secret", "remove", "db"], "");
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["secret", "remove", "db"], "");
    assert!(!out.status.success(), "{}", output_text(&out));
    let listed = output_text(&run(&["secret", "list"], ""));
    assert!(!listed.contains("db") && listed.contains("api"), "{listed}");
}

/// Fails (does not skip) when a port the OpenFaaS gateway needs is taken: it cannot be moved.
fn assert_port_free(port: u16) {
    if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
        panic!(
            "the OpenFaaS gateway listens on :{port}, which is taken ({e}): free it to run this test"
        );
    }
}

#[tokio::test]
async fn the_openfaas_gateway_reports_tributary_as_its_provider() {
    let Some(of_gateway) = openfaas_program("of-gateway") else {
        return;
    };
    let gw = GatewayProcess::start().await;
    let auth = gw.credentials().unwrap().clone();
    assert_port_free(8080);
    assert_port_free(8082);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(of_gateway);
    cmd.env("functions_provider_url", format!("{}/", gw.base))
        .env("basic_auth", "true")
        .env("secret_mount_path", gw.state_dir.join("credentials"))
        .env("direct_functions", "true")
        .env("upstream_timeout", "10s");
    let (mut child, log) = spawn_logged(&mut cmd, dir.path(), "of-gateway");
    let client = reqwest::Client::new();
    let mut info = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .get("http://127.0.0.1:8080/system/info")
            .basic_auth(&auth.user, Some(&auth.password))
            .send()
            .await
            && r.status() == 200
        {
            info = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its /system/secrets goes through to Tributary's.
    let created = client
        .post("http://127.0.0.1:8080/system/secrets")
        .basic_auth(&auth.user, Some(&auth.password))
        .json(&serde_json::json!({"name": "via-openfaas", "value": "v"}))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let info = info.unwrap_or_else(|| panic!("the OpenFaaS gateway did not answer:\n{logs}"));
    assert_eq!(info["provider"]["provider"], "tributary-local", "{info}");
    assert_eq!(info["provider"]["orchestration"], "process", "{info}");
    assert_eq!(
        info["provider"]["version"]["release"],
        env!("CARGO_PKG_VERSION"),
        "{info}"
    );
    assert!(
        !logs.contains("unable to") && !logs.contains("cannot unmarshal"),
        "{logs}"
    );
    assert!(matches!(created, Ok(200..=202)), "{created:?}\n{logs}");
    let secrets: Vec<serde_json::Value> = gw.get_json("/system/secrets").await;
    assert_eq!(secrets[0]["name"], "via-openfaas");
}
