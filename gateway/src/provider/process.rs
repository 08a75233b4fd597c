//! Child-process plumbing shared by the local provider: process groups, parent-death
//! signal, and group-wide termination so no function process outlives the gateway.

use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Puts the child in its own process group and asks the kernel to SIGKILL it if the
/// gateway dies, so even a SIGKILLed gateway leaves no orphans.
pub(crate) fn isolate(cmd: &mut Command) {
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
        // async-signal-safe; it touches no memory shared with the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
    }
}

/// Sends `signal` to the child's whole process group; a group already gone is not an error.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::debug!(pid, %signal, error = %e, "signalling process group failed"),
    }
}

/// SIGTERM the group, wait up to `grace`, then SIGKILL the group and reap the child.
pub(crate) async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::debug!(pid, "process ignored SIGTERM, sending SIGKILL");
    }
    signal_group(pid, Signal::SIGKILL);
    let _ = child.wait().await;
}

/// Resolves a program name against `PATH` (or checks the path when it has a slash),
/// returning why it cannot be run.
pub(crate) fn check_program(
    program: &str,
    path_var: &std::ffi::OsStr,
    work_dir: &std::path::Path,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = work_dir.join(program);
        return if is_exec(&p) {
            Ok(())
        } else {
            Err(format!("{} is not an executable file", p.display()))
        };
    }
    if std::env::split_paths(path_var).any(|dir| is_exec(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("command {program:?} was not found on PATH"))
    }
}
