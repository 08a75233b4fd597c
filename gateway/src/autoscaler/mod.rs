//! The gateway's autoscaler: no Prometheus needed. Every `autoscaler_interval` it reads each
//! opted-in function's load from the gateway's own figures (requests per second, requests in
//! flight), decides its replicas from OpenFaaS's `com.openfaas.scale.*` labels ([`policy`]) and
//! scales through the [`Provider`], whichever it is. `/system/alert` ([`alert`]) takes
//! Alertmanager's webhooks as OpenFaaS CE does.

pub mod lag;
pub(crate) mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tributary_core::Chain;
use tributary_core::units::parse_positive_duration;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::provider::Provider;
use lag::LagReports;
use policy::{History, Policy, ScaleType};
use tributary_core::queue::AsyncQueue;

/// Autoscaler settings.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct AutoscalerConfig {
    /// Scale functions that carry `com.openfaas.scale.type`, `.target` or `.zero` labels on
    /// their load (rps or capacity), and to zero when idle.
    #[arg(long = "autoscaler", env = "autoscaler", default_value = "true", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// How often the autoscaler looks at every function's load.
    #[arg(long, env = "autoscaler_interval", default_value = "2s", value_parser = parse_positive_duration)]
    pub autoscaler_interval: Duration,
    /// How long load must stay low before replicas go down (`com.openfaas.scale.down.window`
    /// overrides it per function).
    #[arg(long, env = "scale_down_window", default_value = "60s", value_parser = tributary_core::units::parse_duration)]
    pub scale_down_window: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

/// Runs the autoscaler until `cancel`.
pub(crate) struct Autoscaler {
    provider: Arc<dyn Provider>,
    metrics: Metrics,
    config: AutoscalerConfig,
    max_replicas: u64,
    history: HashMap<String, History>,
    reported: HashSet<String>,
    lag: LagReports,
    queue: Option<Arc<dyn AsyncQueue>>,
}

impl Autoscaler {
    /// An autoscaler over `provider`'s functions, reading `metrics`.
    pub(crate) fn new(
        provider: Arc<dyn Provider>,
        metrics: Metrics,
        config: AutoscalerConfig,
        max_replicas: u64,
        lag: LagReports,
        queue: Option<Arc<dyn AsyncQueue>>,
    ) -> Self {
        Self {
            provider,
            metrics,
            config,
            max_replicas,
            history: HashMap::new(),
            reported: HashSet::new(),
            lag,
            queue,
        }
    }

    /// Looks at every function each interval until `cancel`.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        tracing::info!(
            interval = ?self.config.autoscaler_interval,
            scale_down_window = ?self.config.scale_down_window,
            "autoscaler running (functions opt in with com.openfaas.scale.* labels)"
        );
        let mut tick = tokio::time::interval(self.config.autoscaler_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %Chain(&e), "autoscaler: listing functions failed; trying again next interval");
            }
        }
    }

    async fn tick(&mut self) -> Result<(), GatewayError> {
        let now = Instant::now();
        let mut seen = HashSet::new();
        let queued = match &self.queue {
            Some(q) => q.depth_by_function().await.unwrap_or_else(|e| {
                tracing::warn!(error = %Chain(&e), "autoscaler: cannot read the queue's depth");
                Default::default()
            }),
            None => Default::default(),
        };
        for ns in self.provider.namespaces().await? {
            for f in self.provider.list(&ns).await? {
                let label = format!("{}.{}", f.name, f.namespace);
                let labels = f.labels.clone().unwrap_or_default();
                let policy = match Policy::from_labels(
                    &labels,
                    self.max_replicas,
                    self.config.scale_down_window,
                ) {
                    Ok(Some(p)) => p,
                    Ok(None) => continue,
                    Err(e) => {
                        if self.reported.insert(label.clone()) {
                            tracing::warn!(function = %label, error = %e, "autoscaler: not scaling this function");
                        }
                        continue;
                    }
                };
                self.reported.remove(&label);
                seen.insert(label.clone());
                let (started, inflight) = self.metrics.load(&label).unwrap_or((0, 0));
                let history = self.history.entry(label.clone()).or_default();
                let rps = history.observe(now, started);
                // Messages waiting for it: its async calls queued and its topics' lag.
                let waiting =
                    queued.get(&label).copied().unwrap_or(0) + self.lag.waiting(&f.topics(","));
                if waiting > 0 || inflight > 0 {
                    // Work is coming or running: not idle (a long call is never cut by a
                    // scale to zero), and woken from zero before any call arrives.
                    history.touch(now);
                }
                let load = match policy.kind {
                    ScaleType::Rps => rps,
                    ScaleType::Capacity => inflight.max(0) as f64,
                    ScaleType::Queue => waiting as f64,
                };
                let Some((desired, reason)) = history.decide(&policy, load, f.replicas, now) else {
                    self.metrics.set_scaling(&label, f.replicas, f.replicas);
                    continue;
                };
                self.metrics.set_scaling(&label, f.replicas, desired);
                tracing::info!(
                    function = %label,
                    from = f.replicas,
                    to = desired,
                    reason = reason.as_str(),
                    kind = ?policy.kind,
                    load,
                    rps,
                    inflight,
                    waiting,
                    target = policy.target,
                    proportion = policy.proportion,
                    idle_secs = history.idle(now).as_secs_f64(),
                    "autoscaler: scaling"
                );
                match self.provider.scale(&f.name, &f.namespace, desired).await {
                    Ok(()) => self.metrics.scaled(&label, reason.as_str()),
                    Err(e) => {
                        tracing::warn!(function = %label, error = %Chain(&e), "autoscaler: scaling failed")
                    }
                }
            }
        }
        self.history.retain(|k, _| seen.contains(k));
        Ok(())
    }
}
