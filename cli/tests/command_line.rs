//! The binary's own surface. Having an integration test here also makes `cargo test
//! --workspace` build `target/<profile>/tributary`, which the workspace tests in `tests/` run.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

fn tributary(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .output()
        .expect("run tributary");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn help_lists_every_subcommand() {
    let (ok, out) = tributary(&["--help"]);
    assert!(ok, "{out}");
    for sub in ["up", "gateway", "echo"] {
        assert!(out.contains(sub), "missing {sub} in:\n{out}");
    }
}

#[test]
fn version_is_the_crate_version() {
    let (ok, out) = tributary(&["--version"]);
    assert!(ok);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn gateway_help_names_openfaas_env_vars() {
    let (ok, out) = tributary(&["gateway", "--help"]);
    assert!(ok);
    for env in [
        "upstream_timeout",
        "basic_auth",
        "secret_mount_path",
        "max_body_size",
        "port",
    ] {
        assert!(
            out.contains(&format!("env: {env}=")),
            "missing {env} in:\n{out}"
        );
    }
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let (ok, out) = tributary(&["frobnicate"]);
    assert!(!ok);
    assert!(out.contains("Usage"), "{out}");
}
