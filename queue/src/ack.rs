//! Settling one leased call: the runtime's outcome becomes a callback and a lease answer (done,
//! again later, or dead letter), and the lease is kept alive while the call runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{Acknowledge, DeadLetter, InvocationOutcome};
use tributary_core::Chain;
use tributary_core::queue::{DeadLetterRecord, QueueError, QueuedRequest, now_ms};

use crate::backend::Lease;
use crate::callback::{CallbackTarget, Callbacks};
use crate::metrics::WorkerMetrics;

/// Extends every registered lease periodically, so calls longer than a lease are not delivered
/// twice.
#[derive(Default)]
pub(crate) struct KeepAlive {
    leases: Mutex<HashMap<u64, Arc<dyn Lease>>>,
    next: AtomicU64,
}

/// A lease kept alive until this is dropped.
pub(crate) struct Registration {
    keepalive: Arc<KeepAlive>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keepalive
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl KeepAlive {
    pub(crate) fn register(self: &Arc<Self>, lease: Arc<dyn Lease>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, lease);
        Registration {
            keepalive: self.clone(),
            id,
        }
    }

    /// Extends every registered lease each `every`; once `cancel` fires, until the calls still
    /// running are settled.
    pub(crate) async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let due = tokio::select! {
                _ = tick.tick() => true,
                _ = cancel.cancelled() => false,
            };
            let leases: Vec<Arc<dyn Lease>> = self
                .leases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            if cancel.is_cancelled() && leases.is_empty() {
                return;
            }
            if !due {
                // Shutting down with calls in flight: keep their leases until they settle.
                tick.tick().await;
                continue;
            }
            for result in futures::future::join_all(leases.iter().map(|l| l.extend())).await {
                if let Err(e) = result {
                    tracing::warn!(error = %Chain(&e), "could not extend a lease; the call may be delivered twice");
                }
            }
        }
    }
}

/// Counts a call in flight until dropped.
pub(crate) struct InFlight(IntGauge);

impl InFlight {
    pub(crate) fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One leased call's acknowledgement handle.
pub(crate) struct QueueAck {
    pub(crate) lease: Arc<dyn Lease>,
    pub(crate) _keepalive: Registration,
    pub(crate) request: QueuedRequest,
    /// The request's function (`name.namespace`), its metrics' label.
    pub(crate) label: String,
    pub(crate) attempt: u32,
    pub(crate) last: Option<InvocationOutcome>,
    pub(crate) callbacks: Callbacks,
    pub(crate) metrics: WorkerMetrics,
    pub(crate) _inflight: InFlight,
}

impl QueueAck {
    /// Posts the final answer to `X-Callback-Url`, if the caller gave one.
    async fn callback(&self) {
        if let Some(url) = &self.request.callback_url {
            let target = CallbackTarget {
                url,
                call_id: &self.request.call_id,
                function: &self.request.function,
            };
            self.callbacks.post(&target, self.last.as_ref()).await;
        }
    }

    /// Records the lease's answer; a failure leaves the call to be delivered again.
    fn settled(&self, result: Result<(), QueueError>) {
        if let Err(e) = result {
            tracing::error!(call_id = %self.request.call_id, error = %Chain(&e), "could not record the outcome; the request will be delivered again");
        }
    }

    /// The final answer is in: callback first (still leased), then the lease answer.
    async fn done(self: Box<Self>) {
        self.callback().await;
        let status = self.last.as_ref().and_then(|o| o.status);
        let duration_ms = self
            .last
            .as_ref()
            .map_or(0, |o| o.duration.as_millis() as u64);
        tracing::info!(
            call_id = %self.request.call_id, function = %self.label, status, attempts = self.attempt,
            duration_ms, "asynchronous call done"
        );
        self.settled(self.lease.ack().await);
    }
}

#[async_trait]
impl Acknowledge for QueueAck {
    fn observe(&mut self, outcome: &InvocationOutcome) {
        let code = outcome.status.unwrap_or(0).to_string();
        self.metrics
            .invocations
            .with_label_values(&[self.label.as_str(), &code])
            .inc();
        self.last = Some(outcome.clone());
    }

    async fn ack(self: Box<Self>) {
        self.done().await;
    }

    async fn nack(self: Box<Self>, retry_after: Option<Duration>) {
        let delay = match retry_after {
            Some(delay) => {
                let last = self.last.as_ref();
                tracing::info!(
                    call_id = %self.request.call_id, function = %self.label, attempt = self.attempt,
                    status = last.and_then(|o| o.status), error = last.and_then(|o| o.error.as_deref()),
                    retry_in = ?delay, "asynchronous call failed; retrying"
                );
                self.metrics
                    .retries
                    .with_label_values(&[self.label.as_str()])
                    .inc();
                delay
            }
            None => {
                tracing::debug!(call_id = %self.request.call_id, "handing the call back to the queue");
                Duration::ZERO
            }
        };
        self.settled(self.lease.retry(delay).await);
    }

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        // A permanent failure (e.g. 400) is the function's final answer, not a dead letter.
        if !letter.failures.iter().any(|f| f.retryable) {
            return self.done().await;
        }
        self.callback().await;
        let label = &self.label;
        let failure = letter.failures.first();
        let reason = format!(
            "{} (gave up after {} attempts)",
            failure.map_or("the function failed", |f| f.error.as_str()),
            self.attempt
        );
        tracing::warn!(call_id = %self.request.call_id, function = %label, attempts = self.attempt, %reason, "asynchronous call dead-lettered");
        self.metrics
            .dead_letters
            .with_label_values(&[label.as_str()])
            .inc();
        let record = DeadLetterRecord {
            id: 0,
            call_id: self.request.call_id.clone(),
            function: self.request.function.clone(),
            namespace: self.request.namespace.clone(),
            status: failure.and_then(|f| f.status),
            reason,
            attempts: self.attempt,
            failed_at_ms: now_ms(),
            body_bytes: self.request.body.len(),
        };
        self.settled(self.lease.dead_letter(record).await);
    }
}
