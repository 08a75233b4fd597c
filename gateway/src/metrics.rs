//! Prometheus metrics with the OpenFaaS gateway's names.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use thread_local::ThreadLocal;
use tributary_core::metrics::Registrar;

/// The gateway's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    invocation_total: IntCounterVec,
    functions_seconds: HistogramVec,
    invocation_started: IntCounterVec,
    inflight: IntGaugeVec,
    service_count: IntGaugeVec,
    queue_depth: IntGauge,
    scaler_desired: IntGaugeVec,
    scaler_current: IntGaugeVec,
    scaler_decisions: IntCounterVec,
    handles: Arc<RwLock<Handles>>,
    /// Each thread's own copy of `handles`: the hot path neither takes the shared lock nor
    /// moves a reference count another core also writes.
    local: Arc<ThreadLocal<RefCell<Handles>>>,
}

/// Each function's handles, by `name.namespace`.
type Handles = HashMap<String, Arc<FunctionHandles>>;

/// Label-bound metric handles for one function, cached so the hot path skips label hashing.
pub struct FunctionHandles {
    started: IntCounter,
    inflight: IntGauge,
    name: String,
    /// Per status code: the invocation counter and latency histogram.
    by_code: RwLock<HashMap<u16, (IntCounter, Histogram)>>,
}

impl FunctionHandles {
    fn new(started: IntCounter, inflight: IntGauge, name: &str) -> Arc<Self> {
        Arc::new(Self {
            started,
            inflight,
            name: name.to_owned(),
            by_code: RwLock::default(),
        })
    }

    /// The `function_name` label value.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Tracks one invocation: counts it started and in flight until [`Invocation::finish`] or drop.
pub struct Invocation<'a> {
    metrics: &'a Metrics,
    handles: Arc<FunctionHandles>,
    finished: bool,
}

impl Invocation<'_> {
    /// Records the outcome: the status code and how long it took.
    pub fn finish(mut self, code: u16, took: Duration) {
        self.record(code, took);
    }

    fn record(&mut self, code: u16, took: Duration) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.handles.inflight.dec();
        let cached = self
            .handles
            .by_code
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&code)
            .cloned();
        let (total, seconds) = cached.unwrap_or_else(|| {
            let label = code.to_string();
            let pair = (
                self.metrics
                    .invocation_total
                    .with_label_values(&[self.handles.name.as_str(), &label]),
                self.metrics
                    .functions_seconds
                    .with_label_values(&[self.handles.name.as_str(), &label]),
            );
            self.handles
                .by_code
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(code, pair.clone());
            pair
        });
        total.inc();
        seconds.observe(took.as_secs_f64());
    }
}

impl Drop for Invocation<'_> {
    fn drop(&mut self) {
        // A request dropped mid-flight (client went away) is counted as 499, like nginx.
        self.record(499, Duration::ZERO);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let labels = &["function_name", "code"];
        let fresh = "metric names are unique in a new registry";
        Self {
            invocation_total: r
                .counter_vec(
                    "gateway_function_invocation_total",
                    "Function invocations by function and status code",
                    labels,
                )
                .expect(fresh),
            functions_seconds: r
                .latency_vec(
                    "gateway_functions_seconds",
                    "Function invocation time taken",
                    labels,
                )
                .expect(fresh),
            invocation_started: r
                .counter_vec(
                    "gateway_function_invocation_started",
                    "Function invocations started",
                    &["function_name"],
                )
                .expect(fresh),
            inflight: r
                .int_gauge_vec(
                    "gateway_function_invocation_inflight",
                    "Function invocations in flight",
                    &["function_name"],
                )
                .expect(fresh),
            service_count: r
                .int_gauge_vec(
                    "gateway_service_count",
                    "Desired replicas per function",
                    &["function_name"],
                )
                .expect(fresh),
            queue_depth: r
                .int_gauge(
                    "gateway_queue_depth",
                    "Asynchronous requests waiting or in flight",
                )
                .expect(fresh),
            scaler_desired: r
                .int_gauge_vec(
                    "gateway_autoscaler_desired_replicas",
                    "Replicas the autoscaler wants per function",
                    &["function_name"],
                )
                .expect(fresh),
            scaler_current: r
                .int_gauge_vec(
                    "gateway_autoscaler_current_replicas",
                    "Replicas each autoscaled function has",
                    &["function_name"],
                )
                .expect(fresh),
            scaler_decisions: r
                .counter_vec(
                    "gateway_autoscaler_decisions_total",
                    "Replica changes by function and reason (scale_up, scale_down, to_zero, alert_firing, alert_resolved)",
                    &["function_name", "reason"],
                )
                .expect(fresh),
            handles: Arc::default(),
            local: Arc::default(),
            registry,
        }
    }

    /// This thread's handles for `function_name`.
    fn local_handles(&self, function_name: &str) -> Arc<FunctionHandles> {
        let mut local = self.local.get_or_default().borrow_mut();
        if let Some(h) = local.get(function_name) {
            return h.clone();
        }
        let shared = self.handles(function_name);
        let h = FunctionHandles::new(
            shared.started.clone(),
            shared.inflight.clone(),
            function_name,
        );
        local.insert(function_name.to_owned(), h.clone());
        h
    }

    fn handles(&self, function_name: &str) -> Arc<FunctionHandles> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function_name)
        {
            return h.clone();
        }
        let h = FunctionHandles::new(
            self.invocation_started.with_label_values(&[function_name]),
            self.inflight.with_label_values(&[function_name]),
            function_name,
        );
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function_name.to_owned())
            .or_insert(h)
            .clone()
    }

    /// Starts tracking an invocation of `function_name` (`name.namespace`).
    pub fn start(&self, function_name: &str) -> Invocation<'_> {
        let handles = self.local_handles(function_name);
        handles.started.inc();
        handles.inflight.inc();
        Invocation {
            metrics: self,
            handles,
            finished: false,
        }
    }

    /// Invocations of `function_name` started so far and in flight now (`None`: never called).
    pub fn load(&self, function_name: &str) -> Option<(u64, i64)> {
        let handles = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function_name)
            .cloned()?;
        Some((handles.started.get(), handles.inflight.get()))
    }

    /// Total invocations of `function_name` over all status codes.
    pub fn invocation_count(&self, function_name: &str) -> f64 {
        self.invocation_total
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "function_name" && l.value() == function_name)
            })
            .map(|m| m.get_counter().get_value())
            // A float sum of nothing is -0.0, which OpenFaaS clients show as "-0".
            .fold(0.0, |total, n| total + n)
    }

    /// Replaces `gateway_service_count` with the given desired replicas per function.
    pub fn set_service_counts(&self, counts: &[(String, u64)]) {
        self.service_count.reset();
        for (name, replicas) in counts {
            self.service_count
                .with_label_values(&[name.as_str()])
                .set(i64::try_from(*replicas).unwrap_or(i64::MAX));
        }
    }

    /// Sets `gateway_queue_depth`.
    pub fn set_queue_depth(&self, depth: u64) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Records the autoscaler's view of a function: its replicas and the count it wants.
    pub fn set_scaling(&self, function_name: &str, current: u64, desired: u64) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.scaler_current
            .with_label_values(&[function_name])
            .set(n(current));
        self.scaler_desired
            .with_label_values(&[function_name])
            .set(n(desired));
    }

    /// Counts a replica change of a function and why it was made.
    pub fn scaled(&self, function_name: &str, reason: &str) {
        self.scaler_decisions
            .with_label_values(&[function_name, reason])
            .inc();
    }

    /// The registry, for components that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        tributary_core::metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_on_several_threads_count_in_the_same_series() {
        let m = Metrics::new();
        m.start("echo.openfaas-fn")
            .finish(200, Duration::from_millis(1));
        let other = m.clone();
        std::thread::spawn(move || {
            other
                .start("echo.openfaas-fn")
                .finish(200, Duration::from_millis(1));
            other.start("echo.openfaas-fn").finish(500, Duration::ZERO);
        })
        .join()
        .expect("calling thread");
        let text = m.render();
        assert!(text.contains("gateway_function_invocation_total{code=\"200\",function_name=\"echo.openfaas-fn\"} 2"), "{text}");
        assert!(text.contains("gateway_function_invocation_total{code=\"500\",function_name=\"echo.openfaas-fn\"} 1"), "{text}");
        assert!(
            text.contains(
                "gateway_functions_seconds_count{code=\"200\",function_name=\"echo.openfaas-fn\"} 2"
            ),
            "{text}"
        );
        assert_eq!(m.load("echo.openfaas-fn"), Some((3, 0)));
    }

    #[test]
    fn counts_invocations_and_inflight() {
        let m = Metrics::new();
        let a = m.start("echo.openfaas-fn");
        let b = m.start("echo.openfaas-fn");
        assert!(m.render().contains(
            "gateway_function_invocation_inflight{function_name=\"echo.openfaas-fn\"} 2"
        ));
        a.finish(200, Duration::from_millis(3));
        drop(b);
        let text = m.render();
        assert!(text.contains("gateway_function_invocation_total{code=\"200\",function_name=\"echo.openfaas-fn\"} 1"), "{text}");
        assert!(text.contains("gateway_function_invocation_total{code=\"499\",function_name=\"echo.openfaas-fn\"} 1"), "{text}");
        assert!(
            text.contains(
                "gateway_function_invocation_started{function_name=\"echo.openfaas-fn\"} 2"
            )
        );
        assert!(text.contains(
            "gateway_function_invocation_inflight{function_name=\"echo.openfaas-fn\"} 0"
        ));
        assert_eq!(m.invocation_count("echo.openfaas-fn"), 2.0);
        assert!(
            m.invocation_count("nothing").is_sign_positive(),
            "0, never -0"
        );
        m.set_service_counts(&[("echo.openfaas-fn".into(), 3)]);
        assert!(
            m.render()
                .contains("gateway_service_count{function_name=\"echo.openfaas-fn\"} 3")
        );
    }
}
