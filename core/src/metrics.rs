//! Prometheus helpers: one way to create and register a metric, render a registry, and serve
//! it on `/metrics` (with `/healthz`).

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

/// Buckets of call-duration histograms, in seconds (1 ms to 60 s).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Creates metrics and registers them in one registry; each call fails if the name is taken.
#[derive(Clone, Copy)]
pub struct Registrar<'a>(pub &'a Registry);

impl Registrar<'_> {
    fn add<M: Collector + Clone + 'static>(
        &self,
        metric: Result<M, prometheus::Error>,
    ) -> Result<M, prometheus::Error> {
        let metric = metric?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// A counter with labels.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.add(IntCounter::new(name, help))
    }

    /// An integer gauge.
    pub fn int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add(IntGauge::new(name, help))
    }

    /// An integer gauge with labels.
    pub fn int_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    /// A float gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
        self.add(Gauge::new(name, help))
    }

    /// A latency histogram with labels, on [`LATENCY_BUCKETS`].
    pub fn latency_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<HistogramVec, prometheus::Error> {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        ))
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

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
                async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "OK\n" }));
    // Nagle off on every accepted connection, as wherever Tributary serves HTTP.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_renders() {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let c = r
            .counter_vec("things_total", "Things", &["kind"])
            .expect("new");
        c.with_label_values(&["a"]).inc();
        assert!(r.counter_vec("things_total", "Again", &["kind"]).is_err());
        assert!(render(&registry).contains("things_total{kind=\"a\"} 1"));
    }
}
