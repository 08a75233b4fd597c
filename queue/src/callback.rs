//! Posting a call's final answer to its `X-Callback-Url`, with retries.

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tributary_connector_sdk::InvocationOutcome;
use tributary_core::Chain;
use tributary_core::http::{
    HttpClientError, PlainHttp, X_CALL_ID, X_DURATION_SECONDS, duration_seconds, http_client,
    is_hop_by_hop,
};
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

const X_FUNCTION_NAME: HeaderName = HeaderName::from_static("x-function-name");
const X_FUNCTION_STATUS: HeaderName = HeaderName::from_static("x-function-status");

/// Attempts to deliver one callback.
const ATTEMPTS: u32 = 5;

/// Posts final answers to callback URLs: plain `http://` ones straight on hyper, the others
/// (https, credentials in the URL, a proxy configured) through reqwest.
#[derive(Clone)]
pub(crate) struct Callbacks {
    client: reqwest::Client,
    plain: Option<PlainHttp>,
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
        let user_agent = concat!("tributary-queue-worker/", env!("CARGO_PKG_VERSION"));
        let idle = max_inflight.max(8);
        Ok(Self {
            client: http_client(user_agent, Some(timeout), idle)?,
            plain: PlainHttp::new(timeout, idle, user_agent)
                .map(|p| p.timeout_from("callback_timeout")),
            metrics,
        })
    }

    /// Sends one callback request: its status, or why there is none.
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::StatusCode, String> {
        if let Some(plain) = self
            .plain
            .as_ref()
            .filter(|_| PlainHttp::takes(request.uri()))
        {
            return plain.send(request).await.map(|(status, _, _)| status);
        }
        let request = reqwest::Request::try_from(request).map_err(|e| Chain(&e).to_string())?;
        match self.client.execute(request).await {
            Ok(response) => Ok(response.status()),
            Err(e) => Err(Chain(&e).to_string()),
        }
    }

    /// POSTs the function's answer (or the lack of one: status 502) to the callback URL,
    /// retrying a refusal with backoff; gives up after a few attempts. A callback that cannot
    /// be built (an invalid URL or header value) fails at once: another attempt would not help.
    pub(crate) async fn post(&self, to: &CallbackTarget<'_>, outcome: Option<&InvocationOutcome>) {
        let (uri, headers, body) = match answer(to, outcome) {
            Ok(answer) => answer,
            Err(error) => {
                tracing::error!(call_id = to.call_id, url = to.url, %error, "callback not sent");
                self.metrics.callbacks_failed.inc();
                return;
            }
        };
        for attempt in 1..=ATTEMPTS {
            let mut request = http::Request::new(body.clone());
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            let sent = self.send(request).await;
            match sent {
                Ok(code) if code.is_success() => {
                    self.metrics.callbacks_delivered.inc();
                    return;
                }
                Ok(code) => {
                    tracing::warn!(call_id = to.call_id, url = to.url, status = %code, attempt, "callback refused")
                }
                Err(error) => {
                    tracing::warn!(call_id = to.call_id, url = to.url, %error, attempt, "callback failed")
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
        self.metrics.callbacks_failed.inc();
    }
}

/// The callback's URL, headers and body: the function's answer with its headers (but those the
/// worker sets itself and hop-by-hop ones), and which call it is; or why it cannot be sent.
fn answer(
    to: &CallbackTarget<'_>,
    outcome: Option<&InvocationOutcome>,
) -> Result<(Uri, HeaderMap, Bytes), String> {
    let invalid =
        |e: &dyn std::fmt::Display| format!("the callback URL or a header is invalid: {e}");
    let uri: Uri = to.url.parse().map_err(|e| invalid(&e))?;
    let forwarded = outcome.map_or(0, |o| o.headers.len());
    let mut headers = HeaderMap::with_capacity(forwarded + 4);
    if let Some(o) = outcome {
        for (name, value) in &o.headers {
            if !NOT_FORWARDED.contains(&name.as_str()) && !is_hop_by_hop(name.as_str()) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let status = outcome.and_then(|o| o.status).unwrap_or(502);
    let took = outcome.map_or(Duration::ZERO, |o| o.duration);
    let value = |v: &str| HeaderValue::from_str(v).map_err(|e| invalid(&e));
    headers.insert(X_CALL_ID, value(to.call_id)?);
    headers.insert(X_FUNCTION_NAME, value(to.function)?);
    headers.insert(X_FUNCTION_STATUS, HeaderValue::from(status));
    headers.insert(X_DURATION_SECONDS, duration_seconds(took));
    let body = outcome.map_or_else(Bytes::new, |o| o.body.clone());
    Ok((uri, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_callback_that_cannot_be_built_fails_at_once_and_is_counted() {
        let registry = prometheus::Registry::new();
        let metrics = WorkerMetrics::register(&registry).expect("registers");
        let callbacks = Callbacks::new(Duration::from_secs(1), 1, metrics.clone()).expect("client");
        for (url, call_id) in [("not a url", "c1"), ("http://127.0.0.1:9/cb", "bad\nid")] {
            let to = CallbackTarget {
                url,
                call_id,
                function: "f",
            };
            let started = std::time::Instant::now();
            callbacks.post(&to, None).await;
            // Retrying would sleep between attempts (up to 0.2, 0.4, 0.8 and 1.6 s).
            assert!(
                started.elapsed() < Duration::from_millis(50),
                "{url}: retried"
            );
        }
        assert_eq!(metrics.callbacks_failed.get(), 2);
        assert_eq!(metrics.callbacks_delivered.get(), 0);
    }
}
