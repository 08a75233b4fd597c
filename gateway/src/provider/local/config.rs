//! The local provider's settings.

use std::path::PathBuf;
use std::time::Duration;

use tributary_core::units::{parse_positive_duration, parse_size};

/// Settings of the local provider.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LocalConfig {
    /// How long a `mode=http` function may take to start listening.
    #[arg(long, env = "startup_timeout", default_value = "10s", value_parser = parse_positive_duration)]
    pub startup_timeout: Duration,
    /// Working directory of function processes; relative commands resolve against it (for
    /// `up`, the stack file's folder by default; otherwise the current folder).
    #[arg(long, env = "work_dir")]
    pub work_dir: Option<PathBuf>,
    /// Requests a fork-mode function runs at once, unless its own `max_inflight` env var says
    /// otherwise (0: no limit); beyond it: 429, as the OpenFaaS watchdog answers.
    #[arg(long, env = "fork_max_inflight", default_value = "64", value_parser = tributary_core::units::parse_count)]
    pub fork_max_inflight: usize,
    /// Output kept per function for `/system/logs`, in the state directory (older lines go).
    #[arg(long, env = "function_log_size", default_value = "1M", value_parser = parse_size)]
    pub function_log_size: usize,
    /// How long a process gets between SIGTERM and SIGKILL.
    #[arg(skip = Duration::from_secs(5))]
    pub stop_grace: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}
