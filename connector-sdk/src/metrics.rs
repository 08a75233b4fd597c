//! The connector's Prometheus metrics, and the `/metrics` endpoint that serves them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

/// Every metric the runtime keeps, in one registry sources can add to.
#[derive(Clone)]
pub struct ConnectorMetrics {
    registry: Registry,
    received: IntCounterVec,
    acked: IntCounterVec,
    nacked: IntCounterVec,
    dead_lettered: IntCounterVec,
    unrouted: IntCounterVec,
    invocations: IntCounterVec,
    latency: HistogramVec,
    retries: IntCounterVec,
    inflight: IntGauge,
    topic_map_size: IntGauge,
    topic_map_rebuilt: Gauge,
    topic_map_errors: IntCounter,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

impl Default for ConnectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectorMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            received: counter(
                "connector_messages_received_total",
                "Messages received from the source",
                &["topic"],
            ),
            acked: counter(
                "connector_messages_acked_total",
                "Messages acknowledged after every function succeeded",
                &["topic"],
            ),
            nacked: counter(
                "connector_messages_nacked_total",
                "Messages handed back to the source for redelivery",
                &["topic"],
            ),
            dead_lettered: counter(
                "connector_messages_dead_lettered_total",
                "Messages dead-lettered",
                &["topic"],
            ),
            unrouted: counter(
                "connector_messages_unrouted_total",
                "Messages acknowledged because no function subscribes to their topic",
                &["topic"],
            ),
            invocations: counter(
                "connector_invocations_total",
                "Function invocations by final status code (0: no answer)",
                &["function", "code"],
            ),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "connector_invocation_seconds",
                    "Time of one function call attempt",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
                &["function"],
            )
            .expect("static metric definition"),
            retries: counter(
                "connector_retries_total",
                "Retried function calls",
                &["function"],
            ),
            inflight: IntGauge::new(
                "connector_inflight_messages",
                "Messages in the runtime (queued or being delivered)",
            )
            .expect("static metric definition"),
            topic_map_size: IntGauge::new(
                "connector_topic_map_size",
                "Topic-function pairs in the topic map",
            )
            .expect("static metric definition"),
            topic_map_rebuilt: Gauge::new(
                "connector_topic_map_last_rebuild_timestamp_seconds",
                "Unix time of the last successful topic map rebuild",
            )
            .expect("static metric definition"),
            topic_map_errors: IntCounter::new(
                "connector_topic_map_rebuild_errors_total",
                "Failed topic map rebuilds",
            )
            .expect("static metric definition"),
            registry,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(m.received.clone()),
            Box::new(m.acked.clone()),
            Box::new(m.nacked.clone()),
            Box::new(m.dead_lettered.clone()),
            Box::new(m.unrouted.clone()),
            Box::new(m.invocations.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.inflight.clone()),
            Box::new(m.topic_map_size.clone()),
            Box::new(m.topic_map_rebuilt.clone()),
            Box::new(m.topic_map_errors.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
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

    pub(crate) fn attempt(&self, function: &str, took: Duration) {
        self.latency
            .with_label_values(&[function])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn retried(&self, function: &str) {
        self.retries.with_label_values(&[function]).inc();
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

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Serves `registry` on `/metrics` (and `/healthz`) on `listener` until `cancel` fires.
pub async fn serve(
    registry: Registry,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics listening on /metrics");
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = render(&registry);
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "OK\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
