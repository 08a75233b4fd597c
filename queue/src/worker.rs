//! The queue worker: the [`QueueSource`] on the connector runtime, configured from the queue
//! worker's settings and the gateway it calls.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    ConfigError, Connector, ConnectorError, ConnectorMetrics, ControllerConfig,
};
use tributary_core::client::Loopback;

use crate::backend::Backend;
use crate::config::{GatewayLink, WorkerConfig};
use crate::source::QueueSource;

/// How often the worker re-reads function annotations (retry overrides).
const REBUILD_INTERVAL: Duration = Duration::from_secs(10);

/// Delivers queued calls through a gateway.
pub struct Worker {
    backend: Arc<dyn Backend>,
    config: ControllerConfig,
    metrics: Option<ConnectorMetrics>,
    loopback: Option<Loopback>,
}

impl Worker {
    /// A worker taking requests from `backend` and calling the functions of `link`'s gateway.
    pub fn new(
        backend: Arc<dyn Backend>,
        settings: &WorkerConfig,
        link: &GatewayLink,
    ) -> Result<Self, ConfigError> {
        let config = ControllerConfig::builder()
            .gateway_url(link.gateway_url.clone())
            .upstream_timeout(link.upstream_timeout)
            .auth(link.auth.clone())
            .metrics_port(link.metrics_port)
            .max_inflight(settings.max_inflight)
            .max_retries(settings.max_retry_attempts.saturating_sub(1))
            .initial_retry_wait(settings.initial_retry_wait.min(settings.max_retry_wait))
            .max_retry_wait(settings.max_retry_wait)
            .rebuild_interval(REBUILD_INTERVAL)
            .print_response(false)
            .build()?;
        Ok(Self {
            backend,
            config,
            metrics: None,
            loopback: None,
        })
    }

    /// Reports the worker's metrics in `registry` (the gateway's, for its own worker).
    pub fn with_registry(mut self, registry: &Registry) -> Result<Self, prometheus::Error> {
        self.metrics = Some(ConnectorMetrics::register(registry)?);
        Ok(self)
    }

    /// Calls functions through `loopback` (the gateway in-process, for its own worker) instead
    /// of over HTTP.
    pub fn with_loopback(mut self, loopback: Loopback) -> Self {
        self.loopback = Some(loopback);
        self
    }

    /// Works until `cancel` fires, then lets the calls in flight finish.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ConnectorError> {
        tracing::info!(
            backend = self.backend.backend(),
            gateway_url = %self.config.gateway_url,
            max_inflight = self.config.max_inflight,
            max_retry_attempts = self.config.max_retries + 1,
            "queue worker starting"
        );
        let (timeout, max_inflight) = (self.config.upstream_timeout, self.config.max_inflight);
        let mut connector = Connector::new(self.config);
        if let Some(metrics) = self.metrics {
            connector = connector.with_metrics(metrics);
        }
        if let Some(loopback) = self.loopback {
            connector = connector.with_loopback(loopback);
        }
        let backend = self.backend.clone();
        let ran = connector
            .run(
                QueueSource::new(self.backend, timeout, max_inflight),
                cancel,
            )
            .await;
        if let Err(e) = backend.flush().await {
            tracing::warn!(error = %tributary_core::Chain(&e), "the last acknowledgements may be lost: their requests will run again");
        }
        ran
    }
}
