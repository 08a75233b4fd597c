//! The recording function: a `mode=http` function (a small Python server) that appends every
//! request it serves to a JSON-lines file, and can be told to fail, delay or ask for retries.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

const SCRIPT: &str = include_str!("recorder.py");

/// The recording function's script, written once per process to the temp folder (set its
/// behaviour with env vars: `RECORD_FILE`, `FAIL_FIRST`, `FAIL_STATUS`, `RETRY_AFTER`,
/// `ALWAYS_STATUS`, `DELAY_MS`, `DELAY_MS_MAX`; see the script's docstring).
pub fn recorder_script() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "tributary-test-util-{}-{}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp folder for the recorder script");
        let path = dir.join("recorder.py");
        std::fs::write(&path, SCRIPT).expect("write the recorder script");
        path
    })
    .clone()
}

/// A `mode=http` deployment of the recording test function (tests/fixtures/recorder.py),
/// writing to `record_file`, subscribed to `topic`, with extra env (FAIL_FIRST, DELAY_MS, ...).
pub fn recorder_function(
    name: &str,
    topic: &str,
    record_file: &Path,
    env: &[(&str, &str)],
) -> Value {
    let script = recorder_script();
    let mut env_vars = serde_json::Map::new();
    env_vars.insert("mode".into(), "http".into());
    env_vars.insert(
        "RECORD_FILE".into(),
        record_file.display().to_string().into(),
    );
    for (k, v) in env {
        env_vars.insert((*k).into(), (*v).into());
    }
    serde_json::json!({
        "service": name,
        "image": "tributary/recorder:test",
        "envProcess": format!("python3 {}", script.display()),
        "envVars": env_vars,
        "annotations": { "topic": topic },
    })
}

/// The bodies a recorder function saw, in the order it served them.
pub fn record_bodies(record_file: &Path) -> Vec<String> {
    read_records(record_file)
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A request header (lower-case name) of one recorded request; empty when absent.
pub fn record_header<'a>(record: &'a Value, name: &str) -> &'a str {
    record["headers"][name].as_str().unwrap_or_default()
}

/// The requests a recorder function saw, in the order it served them.
pub fn read_records(record_file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(record_file).unwrap_or_default();
    // A line the recorder is still writing has no newline yet: it is read next time.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("recorder writes JSON lines"))
        .collect()
}
