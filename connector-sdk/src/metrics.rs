//! The connector's Prometheus metrics, and the `/metrics` endpoint that serves them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};
use tokio_util::sync::CancellationToken;
use tributary_core::metrics::{Registrar, render, serve};

/// Every metric the runtime keeps, in one registry sources can add to.
#[derive(Clone)]
pub struct ConnectorMetrics {
    registry: Registry,
    received: IntCounterVec,
    acked: IntCounterVec,
    nacked: IntCounterVec,
    dead_lettered: IntCounterVec,
    unrouted: IntCounterVec,
    filtered: IntCounterVec,
    invocations: IntCounterVec,
    latency: HistogramVec,
    retries: IntCounterVec,
    inflight: IntGauge,
    topic_map_size: IntGauge,
    topic_map_rebuilt: Gauge,
    topic_map_errors: IntCounter,
}

impl Default for ConnectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectorMetrics {
    /// Every metric, in a registry of their own.
    pub fn new() -> Self {
        Self::register(&Registry::new()).expect("metric names are unique in a new registry")
    }

    /// Every metric, registered in `registry` (e.g. the gateway's, for its queue worker); fails
    /// if the registry already has them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = Registrar(registry);
        Ok(Self {
            received: r.counter_vec(
                "connector_messages_received_total",
                "Messages received from the source",
                &["topic"],
            )?,
            acked: r.counter_vec(
                "connector_messages_acked_total",
                "Messages acknowledged after every function succeeded",
                &["topic"],
            )?,
            nacked: r.counter_vec(
                "connector_messages_nacked_total",
                "Messages handed back to the source for redelivery",
                &["topic"],
            )?,
            dead_lettered: r.counter_vec(
                "connector_messages_dead_lettered_total",
                "Messages dead-lettered",
                &["topic"],
            )?,
            unrouted: r.counter_vec(
                "connector_messages_unrouted_total",
                "Messages acknowledged because no function subscribes to their topic",
                &["topic"],
            )?,
            filtered: r.counter_vec(
                "connector_messages_filtered_total",
                "Messages not delivered to a function because its com.tributary.filter did not match (or is invalid)",
                &["topic", "function"],
            )?,
            invocations: r.counter_vec(
                "connector_invocations_total",
                "Function invocations by final status code (0: no answer)",
                &["function", "code"],
            )?,
            latency: r.latency_vec(
                "connector_invocation_seconds",
                "Time of one function call attempt",
                &["function"],
            )?,
            retries: r.counter_vec(
                "connector_retries_total",
                "Retried function calls",
                &["function"],
            )?,
            inflight: r.int_gauge(
                "connector_inflight_messages",
                "Messages in the runtime (queued or being delivered)",
            )?,
            topic_map_size: r.int_gauge(
                "connector_topic_map_size",
                "Topic-function pairs in the topic map",
            )?,
            topic_map_rebuilt: r.gauge(
                "connector_topic_map_last_rebuild_timestamp_seconds",
                "Unix time of the last successful topic map rebuild",
            )?,
            topic_map_errors: r.counter(
                "connector_topic_map_rebuild_errors_total",
                "Failed topic map rebuilds",
            )?,
            registry: registry.clone(),
        })
    }

    /// The registry, for source-specific metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn received(&self, topic: &str) {
        self.received.with_label_values(&[topic]).inc();
        self.inflight.inc();
    }

    pub(crate) fn acked(&self, topic: &str) {
        self.acked.with_label_values(&[topic]).inc();
        self.inflight.dec();
    }

    pub(crate) fn nacked(&self, topic: &str) {
        self.nacked.with_label_values(&[topic]).inc();
        self.inflight.dec();
    }

    pub(crate) fn dead_lettered(&self, topic: &str) {
        self.dead_lettered.with_label_values(&[topic]).inc();
        self.inflight.dec();
    }

    pub(crate) fn unrouted(&self, topic: &str) {
        self.unrouted.with_label_values(&[topic]).inc();
        self.acked(topic);
    }

    pub(crate) fn filtered(&self, topic: &str, function: &str) {
        self.filtered.with_label_values(&[topic, function]).inc();
    }

    pub(crate) fn retried(&self, function: &str) {
        self.retries.with_label_values(&[function]).inc();
    }

    /// The metric handles of `function`, looked up once (per topic map) instead of per call.
    pub(crate) fn function(&self, function: &str) -> FunctionMetrics {
        FunctionMetrics {
            latency: self.latency.with_label_values(&[function]),
            ok: self.invocations.with_label_values(&[function, "200"]),
            name: function.into(),
            all: self.clone(),
        }
    }

    pub(crate) fn invoked(&self, function: &str, status: Option<u16>) {
        let code = status.unwrap_or(0).to_string();
        self.invocations.with_label_values(&[function, &code]).inc();
    }

    pub(crate) fn topic_map_rebuilt(&self, size: usize, at: SystemTime) {
        self.topic_map_size
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.topic_map_rebuilt.set(secs);
    }

    pub(crate) fn topic_map_failed(&self) {
        self.topic_map_errors.inc();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// Serves `/metrics` and `/healthz` on `listener` until `cancel` fires.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        serve(self.registry, listener, cancel).await
    }
}

/// One function's metric handles: the latency histogram and the count of 200 answers (by far
/// the most common); other codes are looked up by label.
#[derive(Clone)]
pub(crate) struct FunctionMetrics {
    latency: Histogram,
    ok: IntCounter,
    name: Arc<str>,
    all: ConnectorMetrics,
}

impl FunctionMetrics {
    /// One call attempt took `took`.
    pub(crate) fn attempt(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    /// A final outcome: the status the function answered (`None`: no answer).
    pub(crate) fn invoked(&self, status: Option<u16>) {
        match status {
            Some(200) => self.ok.inc(),
            other => self.all.invoked(&self.name, other),
        }
    }
}

impl std::fmt::Debug for FunctionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionMetrics")
            .field("function", &self.name)
            .finish_non_exhaustive()
    }
}
