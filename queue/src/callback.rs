//! Posting a call's final answer to its `X-Callback-Url`, with retries.

use std::time::Duration;

use tributary_connector_sdk::InvocationOutcome;
use tributary_core::Chain;
use tributary_core::http::{HttpClientError, http_client, is_hop_by_hop};
use tributary_core::retry::{exponential, full_jitter};

use crate::metrics::WorkerMetrics;

/// Response headers not copied to the callback, besides hop-by-hop ones: the worker sets its own.
const NOT_FORWARDED: [&str; 6] = [
    "content-length",
    "date",
    "x-call-id",
    "x-duration-seconds",
    "x-start-time",
    "x-function-status",
];

/// Attempts to deliver one callback.
const ATTEMPTS: u32 = 5;

/// Posts final answers to callback URLs.
#[derive(Clone)]
pub(crate) struct Callbacks {
    client: reqwest::Client,
    metrics: WorkerMetrics,
}

/// Which call a callback reports on.
pub(crate) struct CallbackTarget<'a> {
    pub(crate) url: &'a str,
    pub(crate) call_id: &'a str,
    pub(crate) function: &'a str,
}

impl Callbacks {
    /// Callbacks timing out after `timeout`, keeping a connection per call in flight.
    pub(crate) fn new(
        timeout: Duration,
        max_inflight: usize,
        metrics: WorkerMetrics,
    ) -> Result<Self, HttpClientError> {
        Ok(Self {
            client: http_client(
                concat!("tributary-queue-worker/", env!("CARGO_PKG_VERSION")),
                Some(timeout),
                max_inflight.max(8),
            )?,
            metrics,
        })
    }

    /// POSTs the function's answer (or the lack of one: status 502) to the callback URL,
    /// retrying a refusal with backoff; gives up after a few attempts.
    pub(crate) async fn post(&self, to: &CallbackTarget<'_>, outcome: Option<&InvocationOutcome>) {
        let status = outcome.and_then(|o| o.status).unwrap_or(502);
        let took = outcome.map_or(Duration::ZERO, |o| o.duration);
        for attempt in 1..=ATTEMPTS {
            let mut builder = self.client.post(to.url);
            if let Some(o) = outcome {
                for (name, value) in &o.headers {
                    if !NOT_FORWARDED.contains(&name.as_str()) && !is_hop_by_hop(name.as_str()) {
                        builder = builder.header(name, value);
                    }
                }
                builder = builder.body(o.body.clone());
            }
            let sent = builder
                .header("X-Call-Id", to.call_id)
                .header("X-Function-Name", to.function)
                .header("X-Function-Status", status.to_string())
                .header("X-Duration-Seconds", format!("{:.6}", took.as_secs_f64()))
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics
                        .callbacks
                        .with_label_values(&["delivered"])
                        .inc();
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(call_id = to.call_id, url = to.url, status = %resp.status(), attempt, "callback refused")
                }
                Err(e) => {
                    tracing::warn!(call_id = to.call_id, url = to.url, error = %Chain(&e), attempt, "callback failed")
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(full_jitter(exponential(
                    attempt,
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                )))
                .await;
            }
        }
        tracing::error!(
            call_id = to.call_id,
            url = to.url,
            "callback not delivered; giving up"
        );
        self.metrics.callbacks.with_label_values(&["failed"]).inc();
    }
}
