//! The queue worker's metrics (OpenFaaS queue-worker style names), beside the runtime's.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use tributary_core::metrics::Registrar;

/// `queue_worker_*` metrics.
#[derive(Clone)]
pub(crate) struct WorkerMetrics {
    pub(crate) inflight: IntGauge,
    pub(crate) invocations: IntCounterVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) dead_letters: IntCounterVec,
    /// `queue_worker_callbacks_total{result="delivered"}`.
    pub(crate) callbacks_delivered: IntCounter,
    /// `queue_worker_callbacks_total{result="failed"}`.
    pub(crate) callbacks_failed: IntCounter,
}

impl WorkerMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let r = Registrar(registry);
        let callbacks = r.counter_vec(
            "queue_worker_callbacks_total",
            "Callbacks by result",
            &["result"],
        )?;
        Ok(Self {
            callbacks_delivered: callbacks.with_label_values(&["delivered"]),
            callbacks_failed: callbacks.with_label_values(&["failed"]),
            inflight: r.int_gauge(
                "queue_worker_inflight",
                "Asynchronous requests being invoked",
            )?,
            invocations: r.counter_vec(
                "queue_worker_invocations_total",
                "Asynchronous invocations by function and status code (0: no answer)",
                &["function_name", "code"],
            )?,
            retries: r.counter_vec(
                "queue_worker_retries_total",
                "Asynchronous requests put back for a retry",
                &["function_name"],
            )?,
            dead_letters: r.counter_vec(
                "queue_worker_dead_letters_total",
                "Asynchronous requests dead-lettered",
                &["function_name"],
            )?,
        })
    }
}
