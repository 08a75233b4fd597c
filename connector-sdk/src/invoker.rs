//! Calls functions through the gateway: headers, timeout, and retries with exponential backoff,
//! full jitter and `Retry-After`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::ControllerConfig;
use crate::metrics::ConnectorMetrics;

/// Status codes worth another attempt, as in OpenFaaS' queue-worker.
pub const RETRYABLE_STATUS: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// How one function's delivery of one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The function answered 2xx (202 for asynchronous invocation).
    Delivered,
    /// A permanent failure, or retries exhausted.
    Failed,
    /// Shutdown interrupted the retries: the message should be redelivered.
    Interrupted,
}

/// The result of invoking one function for one message, as response subscribers see it.
#[derive(Debug, Clone)]
pub struct InvocationOutcome {
    /// The function address.
    pub function: String,
    /// The message's topic.
    pub topic: String,
    /// How it ended.
    pub delivery: Delivery,
    /// The last HTTP status, if the function answered.
    pub status: Option<u16>,
    /// The last response body.
    pub body: Bytes,
    /// The last response headers.
    pub headers: http::HeaderMap,
    /// The last error, when there was no usable answer.
    pub error: Option<String>,
    /// Time from the first attempt to the end.
    pub duration: Duration,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the last failure was worth another attempt (a connection error or a retryable
    /// status); false for a success or a permanent failure.
    pub retryable: bool,
    /// The message's source context (e.g. partition and offset).
    pub context: Arc<BTreeMap<String, String>>,
}

/// What is sent: shared by every function a message fans out to.
pub(crate) struct Request<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a Bytes,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) context: &'a Arc<BTreeMap<String, String>>,
}

/// Invokes functions on the gateway.
#[derive(Clone)]
pub struct Invoker {
    client: reqwest::Client,
    config: Arc<ControllerConfig>,
    connector: String,
    metrics: ConnectorMetrics,
}

enum Attempt {
    Done(reqwest::StatusCode, http::HeaderMap, Bytes),
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
        headers: http::HeaderMap,
        body: Bytes,
    },
}

impl Invoker {
    /// An invoker for the connector named `connector` (sent as `X-Connector`).
    pub fn new(config: Arc<ControllerConfig>, connector: &str, metrics: ConnectorMetrics) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.upstream_timeout)
            .pool_max_idle_per_host(config.max_inflight.max(8))
            .tcp_nodelay(true)
            .user_agent(format!(
                "tributary-connector/{} ({connector})",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_default();
        Self {
            client,
            config,
            connector: connector.to_owned(),
            metrics,
        }
    }

    /// The configured `max_retries`.
    pub(crate) fn max_retries(&self) -> u32 {
        self.config.max_retries
    }

    fn url(&self, function: &str) -> String {
        let kind = if self.config.asynchronous_invocation {
            "async-function"
        } else {
            "function"
        };
        format!("{}/{kind}/{function}", self.config.gateway_url)
    }

    async fn attempt(&self, function: &str, req: &Request<'_>) -> Attempt {
        let started = Instant::now();
        let attempt = self.send(function, req).await;
        self.metrics.attempt(function, started.elapsed());
        attempt
    }

    /// One HTTP call, classified.
    async fn send(&self, function: &str, req: &Request<'_>) -> Attempt {
        let mut builder = self
            .client
            .post(self.url(function))
            .header("X-Topic", req.topic)
            .header("X-Connector", &self.connector);
        let mut has_content_type = false;
        for (k, v) in req.headers {
            has_content_type |= k.eq_ignore_ascii_case("content-type");
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !has_content_type {
            builder = builder.header("Content-Type", &self.config.content_type);
        }
        let response = match builder.body(req.payload.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    status: None,
                    error: error_chain(&e),
                    retry_after: None,
                    headers: http::HeaderMap::new(),
                    body: Bytes::new(),
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    status: Some(status.as_u16()),
                    error: format!("reading the response failed: {}", error_chain(&e)),
                    retry_after: None,
                    headers,
                    body: Bytes::new(),
                };
            }
        };
        if RETRYABLE_STATUS.contains(&status.as_u16()) {
            return Attempt::Retry {
                status: Some(status.as_u16()),
                error: format!("function answered {status}"),
                retry_after: retry_after(&headers),
                headers,
                body,
            };
        }
        Attempt::Done(status, headers, body)
    }

    /// Delivers one message to one function, retrying retryable failures up to `max_retries`
    /// times; `cancel` cuts a retry wait short (the outcome is then [`Delivery::Interrupted`]).
    pub(crate) async fn invoke(
        &self,
        function: &str,
        req: &Request<'_>,
        max_retries: u32,
        cancel: &CancellationToken,
    ) -> InvocationOutcome {
        let started = Instant::now();
        let mut attempts = 0u32;
        let outcome =
            |delivery, status: Option<u16>, body, headers, error, attempts| InvocationOutcome {
                retryable: delivery == Delivery::Failed
                    && status.is_none_or(|s| RETRYABLE_STATUS.contains(&s)),
                function: function.to_owned(),
                topic: req.topic.to_owned(),
                delivery,
                status,
                body,
                headers,
                error,
                duration: started.elapsed(),
                attempts,
                context: req.context.clone(),
            };
        loop {
            attempts += 1;
            match self.attempt(function, req).await {
                Attempt::Done(status, headers, body) => {
                    self.metrics.invoked(function, Some(status.as_u16()));
                    let (delivery, error) = if status.is_success() {
                        (Delivery::Delivered, None)
                    } else {
                        (
                            Delivery::Failed,
                            Some(format!("function answered {status}, which is not retried")),
                        )
                    };
                    return outcome(
                        delivery,
                        Some(status.as_u16()),
                        body,
                        headers,
                        error,
                        attempts,
                    );
                }
                Attempt::Retry {
                    status,
                    error,
                    retry_after,
                    headers,
                    body,
                } => {
                    if attempts > max_retries {
                        self.metrics.invoked(function, status);
                        let error = format!("{error} (gave up after {attempts} attempts)");
                        return outcome(
                            Delivery::Failed,
                            status,
                            body,
                            headers,
                            Some(error),
                            attempts,
                        );
                    }
                    let wait = self.backoff(attempts, retry_after);
                    self.metrics.retried(function);
                    tracing::debug!(function, attempt = attempts, ?status, %error, ?wait, "retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => {
                            return outcome(Delivery::Interrupted, status, body, headers, Some(format!("{error}; shutting down before retrying")), attempts);
                        }
                    }
                }
            }
        }
    }
}

impl Invoker {
    /// The wait before retry number `retry`: full jitter over the exponential ceiling (anywhere
    /// between zero and it); a `Retry-After` from the function wins, capped at `max_retry_wait`.
    pub(crate) fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(ra) => ra.min(self.config.max_retry_wait),
            None => full_jitter(exponential(
                retry,
                self.config.initial_retry_wait,
                self.config.max_retry_wait,
            )),
        }
    }
}

/// Full jitter: a uniformly random wait between zero and `ceiling`.
pub fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

/// The exponential ceiling before retry number `retry` (1-based): `initial * 2^(retry-1)`,
/// capped at `max`. The connector runtime and the queue worker both use it; the worker reads
/// the attempt number from the queue, so the schedule is a function rather than an iterator.
pub fn exponential(retry: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2f64.powi(
        i32::try_from(retry.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(62),
    );
    Duration::from_secs_f64((initial.as_secs_f64() * factor).min(max.as_secs_f64()))
}

/// Reads `Retry-After` as seconds (HTTP dates are not used by functions in practice).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Joins an error and its causes into one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        current = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_and_caps() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(exponential(1, i, m), Duration::from_millis(100));
        assert_eq!(exponential(3, i, m), Duration::from_millis(400));
        assert_eq!(exponential(10, i, m), m);
        assert_eq!(exponential(500, i, m), m);
        assert!(full_jitter(m) <= m);
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
