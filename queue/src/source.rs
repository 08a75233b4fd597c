//! The queue as a [`Source`] on the connector runtime: each leased request becomes a message
//! that calls its function directly, retried through the queue ([`RetryPolicy::Redeliver`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tributary_connector_sdk::{
    DirectCall, EventInfo, Message, RetryPolicy, Source, SourceContext, SourceError,
};
use tributary_core::Chain;

use crate::ack::{InFlight, KeepAlive, QueueAck};
use crate::backend::{Backend, Lease, Leased};
use crate::callback::Callbacks;
use crate::metrics::WorkerMetrics;

/// Requests leased at once even when fewer calls can start now: one lease transaction for many
/// requests (the extra ones wait for room with their leases kept alive).
const LEASE_BATCH: usize = 16;

/// The connector name of the queue worker (its `User-Agent`).
pub const WORKER_NAME: &str = "queue-worker";

/// Leases requests from a [`Backend`] and hands them to the runtime.
pub struct QueueSource {
    backend: Arc<dyn Backend>,
    callback_timeout: Duration,
    max_inflight: usize,
}

impl QueueSource {
    /// A source on `backend` for a runtime running `max_inflight` calls at once; callbacks time
    /// out after `callback_timeout`.
    pub fn new(backend: Arc<dyn Backend>, callback_timeout: Duration, max_inflight: usize) -> Self {
        Self {
            backend,
            callback_timeout,
            max_inflight,
        }
    }
}

/// What every message of the source shares.
struct Parts {
    keepalive: Arc<KeepAlive>,
    callbacks: Callbacks,
    metrics: WorkerMetrics,
}

impl Parts {
    fn message(&self, leased: Leased) -> Message {
        let Leased {
            request,
            attempt,
            lease,
        } = leased;
        let lease: Arc<dyn Lease> = Arc::from(lease);
        let label = request.label();
        let call = DirectCall {
            function: label.clone(),
            method: http::Method::from_bytes(request.method.as_bytes())
                .unwrap_or(http::Method::POST),
            path: request.path.clone(),
        };
        let mut headers = request.headers.clone();
        headers.push(("X-Call-Id".to_owned(), request.call_id.clone()));
        let call_id = request.call_id.clone();
        let body = request.body.clone();
        let ack = QueueAck {
            _keepalive: self.keepalive.register(lease.clone()),
            lease,
            request,
            label,
            attempt,
            last: None,
            callbacks: self.callbacks.clone(),
            metrics: self.metrics.clone(),
            _inflight: InFlight::new(&self.metrics.inflight),
        };
        let event = EventInfo::new("/async-function", "com.tributary.async.call").with_id(call_id);
        let mut message = Message::call(call, body, ack)
            .with_delivery_count(attempt)
            .with_event(event);
        message.headers = headers;
        message
    }
}

#[async_trait]
impl Source for QueueSource {
    fn name(&self) -> &str {
        WORKER_NAME
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::Redeliver
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let metrics = WorkerMetrics::register(ctx.registry())
            .map_err(|e| SourceError::caused("cannot register the queue worker's metrics", e))?;
        let parts = Parts {
            keepalive: Arc::default(),
            callbacks: Callbacks::new(self.callback_timeout, self.max_inflight, metrics.clone())
                .map_err(|e| SourceError::caused("cannot set up callbacks", e))?,
            metrics,
        };
        let cancel = ctx.cancelled();
        tokio::spawn(
            parts
                .keepalive
                .clone()
                .run(self.backend.lease_refresh(), cancel.clone()),
        );
        tracing::info!(
            backend = self.backend.backend(),
            "queue worker taking requests"
        );
        loop {
            if ctx.ready().await.is_err() {
                return Ok(());
            }
            let want = ctx.room().max(LEASE_BATCH.min(self.max_inflight));
            let leased = match self.backend.lease(want, &cancel).await {
                Ok(leased) => leased,
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "cannot take requests from the queue; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = cancel.cancelled() => return Ok(()),
                    }
                }
            };
            // Every leased request becomes a message at once, so a refused send settles (nacks)
            // the rest instead of leaving them leased.
            let messages: Vec<Message> = leased.into_iter().map(|l| parts.message(l)).collect();
            for message in messages {
                if ctx.send(message).await.is_err() {
                    return Ok(());
                }
            }
            if cancel.is_cancelled() {
                return Ok(());
            }
        }
    }
}
