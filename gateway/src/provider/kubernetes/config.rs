//! The kubernetes provider's settings (faas-netes names where it has them).

use tributary_core::units::parse_whole;

/// Settings of the kubernetes provider. The cluster is found as kubectl finds it: the pod's
/// service account inside a cluster, else `KUBECONFIG` or `~/.kube/config`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct KubernetesConfig {
    /// Give function containers HTTP readiness and liveness probes on the watchdog's
    /// `/_/health` (turn off where pods never answer them, e.g. a hollow test node).
    #[arg(long, env = "http_probe", default_value = "true", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub http_probe: bool,
    /// Seconds before a function's first readiness and liveness probe.
    #[arg(long, env = "readiness_probe_initial_delay_seconds", default_value = "2", value_parser = parse_whole)]
    pub readiness_probe_initial_delay_seconds: u32,
    /// Seconds between probes.
    #[arg(long, env = "readiness_probe_period_seconds", default_value = "2", value_parser = parse_whole)]
    pub readiness_probe_period_seconds: u32,
    /// Seconds a probe may take.
    #[arg(long, env = "readiness_probe_timeout_seconds", default_value = "1", value_parser = parse_whole)]
    pub readiness_probe_timeout_seconds: u32,
    /// Image pull policy of function containers: Always, IfNotPresent or Never.
    #[arg(long, env = "image_pull_policy", default_value = "Always", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,
    /// Run function containers as the non-root user 12000, as faas-netes' set_nonroot_user.
    #[arg(long, env = "set_nonroot_user", default_value = "false", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub set_nonroot_user: bool,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}
