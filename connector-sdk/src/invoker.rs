//! Calls functions through the gateway: headers, timeout, and retries with exponential backoff,
//! full jitter and `Retry-After`, following each function's [`RetrySettings`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use tributary_core::client::{ClientError, GatewayClient, Invocation, Loopback, invocation_path};
use tributary_core::http::{X_CONNECTOR, X_DELIVERY_ATTEMPT, X_TOPIC, http_client};
use tributary_core::retry::retry_after;

use tributary_core::trace::{SpanKind, TRACEPARENT, TraceContext};

use crate::config::ControllerConfig;
use crate::event::{EventInfo, IDEMPOTENCY_KEY, binary_mode};
use crate::message::DirectCall;
use crate::metrics::ConnectorMetrics;
use crate::options::FunctionOptions;

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
    /// Whether the last failure was worth another attempt (a connection error or one of the
    /// function's retryable statuses); false for a success or a permanent failure.
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
    pub(crate) call: Option<&'a DirectCall>,
    pub(crate) event: &'a EventInfo,
    /// The delivery's span: each function call is its child.
    pub(crate) trace: TraceContext,
}

/// Invokes functions on the gateway.
#[derive(Clone)]
pub struct Invoker {
    client: GatewayClient,
    kind: Invocation,
    content_type: HeaderValue,
    connector: HeaderValue,
    metrics: ConnectorMetrics,
    /// The gateway in-process, when the connector runs inside it.
    loopback: Option<Loopback>,
}

/// A setting sent on every call, checked once.
fn header_value(setting: &'static str, value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(value).map_err(|_| ClientError::HeaderValue {
        setting,
        value: value.to_owned(),
    })
}

enum Attempt {
    Done(u16, http::HeaderMap, Bytes),
    Retry {
        status: Option<u16>,
        error: String,
        headers: http::HeaderMap,
        body: Bytes,
    },
}

impl Invoker {
    /// An invoker for the connector named `connector` (sent as `X-Connector`), calling the
    /// gateway through `loopback` when given, else over HTTP.
    pub fn new(
        config: &ControllerConfig,
        connector: &str,
        metrics: ConnectorMetrics,
        loopback: Option<Loopback>,
    ) -> Result<Self, ClientError> {
        let user_agent = format!(
            "tributary-connector/{} ({connector})",
            env!("CARGO_PKG_VERSION")
        );
        let idle = config.max_inflight.max(8);
        let http = http_client(&user_agent, Some(config.upstream_timeout), idle)?;
        Ok(Self {
            client: GatewayClient::with_http(&config.gateway_url, config.client_auth(), http)?
                .with_direct_invocations(config.upstream_timeout, idle, &user_agent),
            kind: if config.asynchronous_invocation {
                Invocation::Async
            } else {
                Invocation::Sync
            },
            content_type: header_value("content_type", &config.content_type)?,
            connector: header_value("the connector's name", connector)?,
            metrics,
            loopback,
        })
    }

    /// The request for attempt number `attempt` (1 for the first), its URI the gateway path;
    /// `cloudevents`: in CloudEvents binary mode. Built on its header map directly (a
    /// builder moves the whole request head on every header).
    fn request(
        &self,
        function: &str,
        req: &Request<'_>,
        attempt: u32,
        cloudevents: bool,
        trace: TraceContext,
    ) -> Result<http::Request<Bytes>, http::Error> {
        let (headers, body) = match req.call {
            None if cloudevents => {
                let (h, b) = binary_mode(req.event, req.payload.clone(), req.headers);
                (Cow::Owned(h), b)
            }
            _ => (Cow::Borrowed(req.headers), req.payload.clone()),
        };
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        let mut request = http::Request::new(body);
        let map = request.headers_mut();
        map.reserve(headers.len() + 6);
        match req.call {
            // A replayed call: its own method, path and headers, only its idempotency key added.
            Some(call) => {
                *request.method_mut() = call.method.clone();
                *request.uri_mut() =
                    http::Uri::try_from(invocation_path(Invocation::Sync, function, &call.path))?;
            }
            None => {
                if !has("x-topic") {
                    map.insert(X_TOPIC, HeaderValue::from_str(req.topic)?);
                }
                if !has("x-connector") {
                    map.insert(X_CONNECTOR, self.connector.clone());
                }
                if !has("content-type") {
                    map.insert(http::header::CONTENT_TYPE, self.content_type.clone());
                }
                map.insert(X_DELIVERY_ATTEMPT, HeaderValue::from(attempt));
                *request.method_mut() = http::Method::POST;
                *request.uri_mut() = http::Uri::try_from(invocation_path(self.kind, function, ""))?;
            }
        }
        let map = request.headers_mut();
        if let Some(id) = &req.event.id
            && !has(IDEMPOTENCY_KEY.as_str())
        {
            map.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(id)?);
        }
        // The message's own traceparent is replaced by this call's span, its child.
        map.insert(HeaderName::from_static(TRACEPARENT), trace.header_value());
        for (k, v) in headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(TRACEPARENT))
        {
            map.append(HeaderName::try_from(k.as_str())?, HeaderValue::from_str(v)?);
        }
        Ok(request)
    }

    /// Sends `request` to the gateway, in-process when there is a loopback: the status, headers
    /// and body of the answer, or why there is none.
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
        if let Some(loopback) = &self.loopback {
            let (parts, body) = loopback(request).await.into_parts();
            return Ok((parts.status, parts.headers, body));
        }
        self.client.call_invocation(request).await
    }

    /// One call, classified by the function's retry settings.
    async fn attempt(
        &self,
        function: &str,
        req: &Request<'_>,
        options: &FunctionOptions,
        number: u32,
        trace: TraceContext,
    ) -> Attempt {
        let (settings, started) = (&*options.retry, Instant::now());
        let sent = match self.request(function, req, number, options.cloudevents, trace) {
            Ok(request) => self.send(request).await,
            Err(e) => Err(format!("the message's headers make no valid request: {e}")),
        };
        let attempt = match sent {
            Err(error) => Attempt::Retry {
                status: None,
                error,
                headers: http::HeaderMap::new(),
                body: Bytes::new(),
            },
            Ok((status, headers, body))
                if !status.is_success() && settings.is_retryable(Some(status.as_u16())) =>
            {
                Attempt::Retry {
                    status: Some(status.as_u16()),
                    error: format!("function answered {status}"),
                    headers,
                    body,
                }
            }
            Ok((status, headers, body)) => Attempt::Done(status.as_u16(), headers, body),
        };
        options.metrics.attempt(started.elapsed());
        attempt
    }

    /// Delivers one message to one function, retrying retryable failures up to `max_retries`
    /// times with `settings`' backoff; `cancel` cuts a retry wait short (the outcome is then
    /// [`Delivery::Interrupted`]). The calls are one span, a child of the delivery's.
    pub(crate) async fn invoke(
        &self,
        function: &str,
        req: &Request<'_>,
        options: &FunctionOptions,
        max_retries: u32,
        cancel: &CancellationToken,
    ) -> InvocationOutcome {
        let tracer = tributary_core::trace::global();
        let mut span = tracer.start("invoke", SpanKind::Client, Some(&req.trace));
        let outcome = self
            .invoke_in(function, req, options, max_retries, cancel, span.context())
            .await;
        if tracer.enabled() {
            span.attr("faas.invoked_name", function);
            span.attr("messaging.destination.name", req.topic);
            if let Some(status) = outcome.status {
                span.attr("http.response.status_code", status.to_string());
            }
            span.attr("tributary.attempts", outcome.attempts.to_string());
            if outcome.delivery != Delivery::Delivered {
                span.fail(
                    outcome
                        .error
                        .clone()
                        .unwrap_or_else(|| "not delivered".into()),
                );
            }
        }
        outcome
    }

    async fn invoke_in(
        &self,
        function: &str,
        req: &Request<'_>,
        options: &FunctionOptions,
        max_retries: u32,
        cancel: &CancellationToken,
        trace: TraceContext,
    ) -> InvocationOutcome {
        let settings = &*options.retry;
        let started = Instant::now();
        let mut attempts = 0u32;
        let outcome =
            |delivery, status: Option<u16>, body, headers, error, attempts| InvocationOutcome {
                retryable: delivery == Delivery::Failed && settings.is_retryable(status),
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
            match self.attempt(function, req, options, attempts, trace).await {
                Attempt::Done(status, headers, body) => {
                    options.metrics.invoked(Some(status));
                    let (delivery, error) = if (200..300).contains(&status) {
                        (Delivery::Delivered, None)
                    } else {
                        (
                            Delivery::Failed,
                            Some(format!("function answered {status}, which is not retried")),
                        )
                    };
                    return outcome(delivery, Some(status), body, headers, error, attempts);
                }
                Attempt::Retry {
                    status,
                    error,
                    headers,
                    body,
                } => {
                    if attempts > max_retries {
                        options.metrics.invoked(status);
                        return outcome(
                            Delivery::Failed,
                            status,
                            body,
                            headers,
                            Some(error),
                            attempts,
                        );
                    }
                    let wait = settings.backoff(attempts, retry_after(&headers));
                    self.metrics.retried(function);
                    tracing::debug!(function, attempt = attempts, status, %error, ?wait, "retrying");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_be_headers_are_refused_when_the_invoker_is_made() {
        let config = ControllerConfig {
            content_type: "text/plain\u{7}".into(),
            ..ControllerConfig::default()
        };
        let made = Invoker::new(&config, "kafka-connector", ConnectorMetrics::new(), None);
        match made {
            Err(ClientError::HeaderValue { setting, value }) => {
                assert_eq!(
                    (setting, value.as_str()),
                    ("content_type", "text/plain\u{7}")
                );
            }
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("made with an unusable content_type"),
        }
        let config = ControllerConfig::default();
        assert!(Invoker::new(&config, "kafka-connector", ConnectorMetrics::new(), None).is_ok());
    }
}
