//! A test harness for connector authors (feature `test-util`): a real `tributary gateway`
//! process on a free port ([`GatewayProcess`]), a recording function deployed on it
//! ([`recorder_function`], [`read_records`]), and an in-memory source whose acknowledgements a
//! test can watch ([`channel_source`]). Tributary's own integration tests use the same pieces.
//!
//! The gateway is the `tributary` binary: `$TRIBUTARY_BIN`, else the one next to the test
//! executable (`target/<profile>/tributary`, built by `cargo build --bins`), else on `PATH`. The
//! recording function needs `python3`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_connector_sdk::test_util::{GatewayProcess, eventually, read_records, recorder_function};
//!
//! # async fn t() {
//! let gateway = GatewayProcess::start().await;
//! let dir = tempfile::tempdir().unwrap();
//! let record = dir.path().join("lines.jsonl");
//! gateway.deploy_ok(recorder_function("lines", "lines", &record, &[])).await;
//! // ... run the connector against gateway.base, then:
//! eventually(Duration::from_secs(10), "a delivery", || async { !read_records(&record).is_empty() }).await;
//! # }
//! ```

mod gateway;
mod recorder;
mod source;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use gateway::{GatewayOptions, GatewayProcess, echo_function, fork_function};
pub use recorder::{
    read_records, record_bodies, record_header, recorder_function, recorder_script,
};
pub use source::{AckEvent, ChannelSource, Feed, TestAck, channel_source, test_config};

/// A free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Path of the `tributary` binary: `$TRIBUTARY_BIN`, next to the test executable's folder
/// (`target/<profile>/tributary`), or on `PATH`.
pub fn tributary_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRIBUTARY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("tributary"));
    if let Some(bin) = beside.filter(|b| b.exists()) {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("tributary"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no tributary binary: run `cargo build --bins` before the tests (scripts/test does), or set TRIBUTARY_BIN"
            )
        })
}

/// Path of connector `kind`'s own program (`tributary-kafka-connector`), beside
/// [`tributary_bin`].
pub fn connector_bin(kind: &str) -> PathBuf {
    let bin = tributary_bin().with_file_name(format!("tributary-{kind}-connector"));
    assert!(
        bin.is_file(),
        "no {}: run `cargo build --bins` before the tests (scripts/test does)",
        bin.display()
    );
    bin
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes (then panics naming `what`).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
        sig,
    );
}

/// Spawns `cmd` (RUST_LOG=info unless set) with stdout and stderr going to `dir/NAME.log`;
/// returns the child and the log's path.
pub fn spawn_logged(cmd: &mut Command, dir: &Path, name: &str) -> (Child, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
        cmd.env("RUST_LOG", "info");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    (child, log)
}

/// Waits up to `limit` for `child` to exit, failing with its log otherwise.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {limit:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
