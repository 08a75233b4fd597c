//! `/function/NAME[.NAMESPACE][/path]` (proxied to the provider) and `/async-function/...`
//! (stored in the async queue, answered 202 with `X-Call-Id`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use tributary_core::http::{
    X_CALL_ID, X_CONNECTOR, X_DELIVERY_ATTEMPT, X_DURATION_SECONDS, X_TOPIC, duration_seconds,
    is_hop_by_hop,
};
use tributary_core::queue::QueuedRequest;
use tributary_core::trace::{ActiveSpan, SpanKind, TRACEPARENT, TraceContext};

use super::{App, AppState, resolve_namespace};
use crate::error::GatewayError;
use crate::model::validate_name;

const X_START_TIME: HeaderName = HeaderName::from_static("x-start-time");

/// Splits `/function/NAME[.NAMESPACE][/rest]` into name, namespace and the function-relative path.
fn split_function_path(
    uri: &Uri,
    default_namespace: &str,
) -> Result<(String, String, String), GatewayError> {
    let path = uri.path();
    let rest = path
        .strip_prefix("/function/")
        .or_else(|| path.strip_prefix("/async-function/"))
        .unwrap_or(path);
    let (target, sub) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (name, ns) = match target.split_once('.') {
        Some((name, ns)) => (name, resolve_namespace(Some(ns), default_namespace)?),
        None => (target, default_namespace.to_owned()),
    };
    validate_name("function", name).map_err(GatewayError::BadRequest)?;
    let mut forward = sub.to_owned();
    if let Some(q) = uri.query() {
        forward.push('?');
        forward.push_str(q);
    }
    Ok((name.to_owned(), ns, forward))
}

pub(super) async fn invoke(State(app): App, request: Request) -> Response {
    let started = Instant::now();
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (mut parts, body) = request.into_parts();
    let call_id = call_id(&parts.headers);
    let start_value = HeaderValue::from(u64::try_from(start_nanos).unwrap_or(u64::MAX));
    let (mut response, took) = match prepare(&app, &mut parts) {
        Err(e) => (e.into_response(), started.elapsed()),
        Ok((name, ns)) => {
            parts.headers.insert(X_CALL_ID, call_id.clone());
            parts.headers.insert(X_START_TIME, start_value.clone());
            let body = Body::new(Limited::new(body, app.max_body_size));
            let label = [name.as_str(), ".", ns.as_str()].concat();
            let source = ConnectorHeaders::of(&parts.headers);
            let mut span = continue_trace(&mut parts.headers);
            let invocation = app.metrics.start(&label);
            let result = app
                .provider
                .invoke(&name, &ns, Request::from_parts(parts, body))
                .await;
            let response = result.unwrap_or_else(IntoResponse::into_response);
            let (status, took) = (response.status().as_u16(), started.elapsed());
            invocation.finish(status, took);
            if let Some(span) = &mut span {
                span.attr("faas.invoked_name", label.as_str());
                span.attr("http.response.status_code", status.to_string());
                if status >= 500 {
                    span.fail(format!("the function answered {status}"));
                }
            }
            app.activity.record(crate::activity::Call {
                function: label,
                status,
                took,
                call_id: call_id.to_str().unwrap_or(""),
                connector: ConnectorHeaders::text(&source.connector),
                topic: ConnectorHeaders::text(&source.topic),
                attempt: source.attempt,
            });
            (response, took)
        }
    };
    let headers = response.headers_mut();
    headers.insert(X_CALL_ID, call_id);
    headers.insert(X_START_TIME, start_value);
    headers.insert(X_DURATION_SECONDS, duration_seconds(took));
    response
}

/// With spans exported, the gateway's own span continues the caller's trace (or starts one) and
/// the function gets it as its parent; without, `traceparent` passes through untouched.
fn continue_trace(headers: &mut http::HeaderMap) -> Option<ActiveSpan> {
    let tracer = tributary_core::trace::global();
    if !tracer.enabled() {
        return None;
    }
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let span = tracer.start("proxy", SpanKind::Server, incoming.as_ref());
    headers.insert(TRACEPARENT, span.context().header_value());
    Some(span)
}

/// What a connector says of a call: `X-Connector`, `X-Topic`, `X-Delivery-Attempt` (values
/// shared with the request's, not copied).
struct ConnectorHeaders {
    connector: Option<HeaderValue>,
    topic: Option<HeaderValue>,
    attempt: Option<u32>,
}

impl ConnectorHeaders {
    fn of(headers: &http::HeaderMap) -> Self {
        Self {
            connector: headers.get(X_CONNECTOR).cloned(),
            topic: headers.get(X_TOPIC).cloned(),
            attempt: headers
                .get(X_DELIVERY_ATTEMPT)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }

    fn text(value: &Option<HeaderValue>) -> Option<&str> {
        value.as_ref().and_then(|v| v.to_str().ok())
    }
}

/// Headers not stored with a queued request, besides hop-by-hop ones: recomputed on replay or
/// kept as their own fields.
const NOT_QUEUED: [&str; 4] = ["host", "content-length", "x-callback-url", "x-call-id"];

/// `/async-function/{name}[/path]`: stores the request durably and answers 202 with `X-Call-Id`.
pub(super) async fn invoke_async(State(app): App, request: Request) -> Response {
    match enqueue(&app, request).await {
        Ok(call_id) => {
            let mut r = StatusCode::ACCEPTED.into_response();
            r.headers_mut().insert(X_CALL_ID, call_id);
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn enqueue(app: &AppState, request: Request) -> Result<HeaderValue, GatewayError> {
    let queue = app.queue.clone().ok_or(GatewayError::NoQueue)?;
    let (mut parts, body) = request.into_parts();
    let (name, ns) = prepare(app, &mut parts)?;
    let call_id = call_id(&parts.headers);
    let callback_url = match parts.headers.get("x-callback-url") {
        None => None,
        Some(v) => {
            let url = v
                .to_str()
                .ok()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
            match url.and_then(|u| u.parse::<Uri>().ok().map(|p| (u, p))) {
                Some((u, parsed)) if app.callback_allow.allows(&parsed) => Some(u.to_owned()),
                Some(_) => {
                    return Err(GatewayError::BadRequest(format!(
                        "X-Callback-Url names a host that callback_allow ({}) does not list",
                        app.callback_allow
                    )));
                }
                None => {
                    return Err(GatewayError::BadRequest(
                        "X-Callback-Url must be an http:// or https:// URL".into(),
                    ));
                }
            }
        }
    };
    let body = axum::body::to_bytes(body, app.max_body_size)
        .await
        .map_err(|e| {
            if crate::proxy::is_length_limit(&e) {
                GatewayError::PayloadTooLarge {
                    limit: app.max_body_size,
                }
            } else {
                GatewayError::BadRequest(format!("reading the request body failed: {e}"))
            }
        })?;
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| !NOT_QUEUED.contains(&k.as_str()) && !is_hop_by_hop(k.as_str()))
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let queued = QueuedRequest {
        call_id: call_id.to_str().unwrap_or("unknown").to_owned(),
        function: name,
        namespace: ns,
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        headers,
        callback_url,
        enqueued_at_ms: tributary_core::queue::now_ms(),
        body,
    };
    queue.enqueue(queued).await?;
    Ok(call_id)
}

/// The caller's `X-Call-Id`, or a new UUID.
fn call_id(headers: &http::HeaderMap) -> HeaderValue {
    headers.get(X_CALL_ID).cloned().unwrap_or_else(|| {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("unknown"))
    })
}

/// Checks the target function exists and rewrites the URI to the function's own path.
fn prepare(
    app: &AppState,
    parts: &mut http::request::Parts,
) -> Result<(String, String), GatewayError> {
    let (name, ns, forward) = split_function_path(&parts.uri, &app.function_namespace)?;
    if !app.provider.has_function(&name, &ns) {
        return Err(GatewayError::FunctionNotFound {
            name,
            namespace: ns,
        });
    }
    parts.uri = forward
        .parse()
        .map_err(|e| GatewayError::BadRequest(format!("invalid path: {e}")))?;
    parts.headers.remove(header::HOST);
    Ok((name, ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DEFAULT_NAMESPACE;

    #[test]
    fn function_paths_split_into_name_namespace_and_rest() {
        let uri: Uri = "/function/echo".parse().expect("uri");
        assert_eq!(
            split_function_path(&uri, DEFAULT_NAMESPACE).expect("ok"),
            ("echo".into(), DEFAULT_NAMESPACE.into(), "/".into())
        );
        let uri: Uri = "/function/echo.dev/a/b?x=1&y=2".parse().expect("uri");
        assert_eq!(
            split_function_path(&uri, DEFAULT_NAMESPACE).expect("ok"),
            ("echo".into(), "dev".into(), "/a/b?x=1&y=2".into())
        );
        let uri: Uri = "/function/Bad_Name".parse().expect("uri");
        assert!(split_function_path(&uri, DEFAULT_NAMESPACE).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_function_path_splits_or_is_a_bad_request(path in "/(async-)?function/[ -~]{0,40}") {
            let Ok(uri) = path.parse::<Uri>() else { return Ok(()) };
            match split_function_path(&uri, DEFAULT_NAMESPACE) {
                Ok((name, ns, forward)) => {
                    proptest::prop_assert!(crate::model::validate_name("function", &name).is_ok());
                    proptest::prop_assert!(crate::model::validate_name("namespace", &ns).is_ok());
                    proptest::prop_assert!(forward.starts_with('/'), "{forward}");
                }
                Err(e) => proptest::prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
            }
        }
    }
}
