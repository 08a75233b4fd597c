//! The OpenFaaS REST API: `/system/*`, `/function/*`, `/healthz`, `/metrics`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::Limited;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{Credentials, require_basic_auth};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::{
    DEFAULT_NAMESPACE, DeleteFunctionRequest, FunctionDeployment, GatewayInfo, ScaleServiceRequest,
    VersionInfo, validate_name,
};
use crate::provider::Provider;
use crate::queue::{Queue, QueueError, QueuedRequest};

const X_CALL_ID: &str = "x-call-id";
const X_START_TIME: &str = "x-start-time";
const X_DURATION_SECONDS: &str = "x-duration-seconds";

/// Shared state of the API handlers.
pub(crate) struct AppState {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) metrics: Metrics,
    pub(crate) max_body_size: usize,
    pub(crate) queue: Option<Arc<dyn Queue>>,
}

type App = State<Arc<AppState>>;

#[derive(Debug, Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

impl NamespaceQuery {
    fn resolve(&self) -> Result<String, GatewayError> {
        resolve_namespace(self.namespace.as_deref())
    }
}

fn resolve_namespace(ns: Option<&str>) -> Result<String, GatewayError> {
    match ns {
        None | Some("") => Ok(DEFAULT_NAMESPACE.to_owned()),
        Some(ns) => {
            validate_name("namespace", ns).map_err(GatewayError::BadRequest)?;
            Ok(ns.to_owned())
        }
    }
}

/// Builds the router; `credentials` turns on basic auth for `/system/*`.
pub(crate) fn router(state: Arc<AppState>, credentials: Option<Arc<Credentials>>) -> Router {
    let mut system = Router::new()
        .route(
            "/system/functions",
            get(list_functions)
                .post(deploy_function)
                .put(update_function)
                .delete(delete_function),
        )
        .route("/system/function/{name}", get(function_status))
        .route("/system/scale-function/{name}", post(scale_function))
        .route("/system/namespaces", get(list_namespaces))
        .route("/system/info", get(info))
        .route("/system/async-dead-letters", get(dead_letters));
    if let Some(credentials) = credentials {
        system = system.layer(axum::middleware::from_fn_with_state(
            credentials,
            require_basic_auth,
        ));
    }
    let limit = state.max_body_size;
    Router::new()
        .merge(system)
        .route("/function/{*rest}", any(invoke))
        .route("/async-function/{*rest}", any(invoke_async))
        .route("/healthz", get(|| async { "OK\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            reject_oversized,
        ))
        .with_state(state)
}

/// The most an oversized body is read (and discarded) before answering 413.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;
/// How long an oversized body is read before answering 413.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers 413 to a request whose declared `Content-Length` is over the limit. The body is read
/// and discarded first (bounded), so the client sees the 413 rather than a reset connection.
async fn reject_oversized(
    State(limit): State<usize>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => {
            if n <= DRAIN_CAP {
                drain(request.into_body(), DRAIN_CAP, DRAIN_TIME).await;
            }
            GatewayError::PayloadTooLarge { limit }.into_response()
        }
        _ => next.run(request).await,
    }
}

/// Reads and discards a body, up to `cap` bytes or `time`.
pub(crate) async fn drain(body: Body, cap: u64, time: std::time::Duration) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    let _ = tokio::time::timeout(time, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > cap {
                break;
            }
        }
    })
    .await;
}

/// Parses a JSON body, naming the offending field on error.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, GatewayError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            GatewayError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            GatewayError::BadRequest(format!("invalid JSON body at field `{path}`: {inner}"))
        }
    })
}

fn validate_deployment(d: &mut FunctionDeployment) -> Result<(), GatewayError> {
    validate_name("function", &d.service)
        .map_err(|e| GatewayError::BadRequest(format!("field `service`: {e}")))?;
    let ns = resolve_namespace(d.namespace.as_deref())
        .map_err(|e| GatewayError::BadRequest(format!("field `namespace`: {e}")))?;
    d.namespace = Some(ns);
    Ok(())
}

async fn list_functions(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, GatewayError> {
    let ns = q.resolve()?;
    let mut functions = app.provider.list(&ns).await?;
    for f in &mut functions {
        f.invocation_count = app
            .metrics
            .invocation_count(&format!("{}.{}", f.name, f.namespace));
    }
    Ok(axum::Json(functions).into_response())
}

async fn function_status(
    State(app): App,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, GatewayError> {
    let ns = q.resolve()?;
    validate_name("function", &name).map_err(GatewayError::BadRequest)?;
    let mut status = app.provider.status(&name, &ns).await?;
    status.invocation_count = app.metrics.invocation_count(&format!("{name}.{ns}"));
    Ok(axum::Json(status).into_response())
}

async fn deploy_function(State(app): App, body: Bytes) -> Result<Response, GatewayError> {
    let mut d: FunctionDeployment = parse_json(&body)?;
    validate_deployment(&mut d)?;
    app.provider.deploy(d).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn update_function(State(app): App, body: Bytes) -> Result<Response, GatewayError> {
    let mut d: FunctionDeployment = parse_json(&body)?;
    validate_deployment(&mut d)?;
    app.provider.update(d).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn delete_function(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: DeleteFunctionRequest = parse_json(&body)?;
    validate_name("function", &req.function_name)
        .map_err(|e| GatewayError::BadRequest(format!("field `functionName`: {e}")))?;
    let ns = resolve_namespace(req.namespace.as_deref().or(q.namespace.as_deref()))?;
    app.provider.delete(&req.function_name, &ns).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn scale_function(
    State(app): App,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: ScaleServiceRequest = parse_json(&body)?;
    validate_name("function", &name).map_err(GatewayError::BadRequest)?;
    if !req.service_name.is_empty() && req.service_name != name {
        return Err(GatewayError::BadRequest(format!(
            "field `serviceName` ({:?}) does not match the function in the path ({name:?})",
            req.service_name
        )));
    }
    let ns = resolve_namespace(req.namespace.as_deref().or(q.namespace.as_deref()))?;
    app.provider.scale(&name, &ns, req.replicas).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_namespaces(State(app): App) -> Result<Response, GatewayError> {
    Ok(axum::Json(app.provider.namespaces().await?).into_response())
}

async fn info(State(app): App) -> Response {
    axum::Json(GatewayInfo {
        provider: app.provider.info(),
        version: VersionInfo {
            release: env!("CARGO_PKG_VERSION").into(),
            sha: String::new(),
            commit_message: Some(String::new()),
        },
        arch: std::env::consts::ARCH.into(),
    })
    .into_response()
}

async fn metrics(State(app): App) -> Response {
    let mut counts = Vec::new();
    if let Ok(namespaces) = app.provider.namespaces().await {
        for ns in namespaces {
            if let Ok(functions) = app.provider.list(&ns).await {
                counts.extend(
                    functions
                        .into_iter()
                        .map(|f| (format!("{}.{}", f.name, f.namespace), f.replicas)),
                );
            }
        }
    }
    app.metrics.set_service_counts(&counts);
    if let Some(queue) = &app.queue {
        match queue.depth().await {
            Ok(depth) => app.metrics.set_queue_depth(depth),
            Err(e) => tracing::warn!(error = %e, "cannot read the queue depth"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Splits `/function/NAME[.NAMESPACE][/rest]` into name, namespace and the function-relative path.
fn split_function_path(uri: &Uri) -> Result<(String, String, String), GatewayError> {
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
        Some((name, ns)) => (name, resolve_namespace(Some(ns))?),
        None => (target, DEFAULT_NAMESPACE.to_owned()),
    };
    validate_name("function", name).map_err(GatewayError::BadRequest)?;
    let mut forward = sub.to_owned();
    if let Some(q) = uri.query() {
        forward.push('?');
        forward.push_str(q);
    }
    Ok((name.to_owned(), ns, forward))
}

async fn invoke(State(app): App, request: Request) -> Response {
    let started = Instant::now();
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (mut parts, body) = request.into_parts();
    let call_id = call_id(&parts.headers);
    let start_value = HeaderValue::from(u64::try_from(start_nanos).unwrap_or(u64::MAX));
    let mut response = match prepare(&app, &mut parts) {
        Err(e) => e.into_response(),
        Ok((name, ns)) => {
            parts.headers.insert(X_CALL_ID, call_id.clone());
            parts.headers.insert(X_START_TIME, start_value.clone());
            let body = Body::new(Limited::new(body, app.max_body_size));
            let label = format!("{name}.{ns}");
            let invocation = app.metrics.start(&label);
            let result = app
                .provider
                .invoke(&name, &ns, Request::from_parts(parts, body))
                .await;
            let response = result.unwrap_or_else(IntoResponse::into_response);
            invocation.finish(response.status().as_u16(), started.elapsed());
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(X_CALL_ID, call_id);
    headers.insert(X_START_TIME, start_value);
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", started.elapsed().as_secs_f64())) {
        headers.insert(X_DURATION_SECONDS, v);
    }
    response
}

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn dead_letters(
    State(app): App,
    Query(q): Query<LimitQuery>,
) -> Result<Response, GatewayError> {
    let queue = app.queue.as_ref().ok_or_else(no_queue)?;
    let records = queue
        .dead_letters(q.limit.unwrap_or(100).min(10_000))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(axum::Json(records).into_response())
}

fn no_queue() -> GatewayError {
    GatewayError::Internal("asynchronous invocation needs a queue: run the gateway with the embedded queue (queue_path) or nats_url".into())
}

/// Headers not stored with a queued request, besides hop-by-hop ones: recomputed on replay or
/// kept as their own fields.
const NOT_QUEUED: [&str; 4] = ["host", "content-length", "x-callback-url", "x-call-id"];

/// `/async-function/{name}[/path]`: stores the request durably and answers 202 with `X-Call-Id`.
async fn invoke_async(State(app): App, request: Request) -> Response {
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
    let queue = app.queue.clone().ok_or_else(no_queue)?;
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
            match url.and_then(|u| u.parse::<Uri>().ok().map(|_| u.to_owned())) {
                Some(u) => Some(u),
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
        .filter(|(k, _)| {
            !NOT_QUEUED.contains(&k.as_str()) && !crate::proxy::is_hop_by_hop(k.as_str())
        })
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
        enqueued_at_ms: crate::queue::now_ms(),
        body,
    };
    match queue.enqueue(queued).await {
        Ok(()) => Ok(call_id),
        Err(QueueError::TooLarge { limit, .. }) => Err(GatewayError::PayloadTooLarge { limit }),
        Err(e) => Err(GatewayError::Internal(format!("request not queued: {e}"))),
    }
}

/// The caller's `X-Call-Id`, or a new UUID.
fn call_id(headers: &http::HeaderMap) -> HeaderValue {
    headers.get(X_CALL_ID).cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"))
    })
}

/// Checks the target function exists and rewrites the URI to the function's own path.
fn prepare(
    app: &AppState,
    parts: &mut http::request::Parts,
) -> Result<(String, String), GatewayError> {
    let (name, ns, forward) = split_function_path(&parts.uri)?;
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

    #[test]
    fn function_paths_split_into_name_namespace_and_rest() {
        let uri: Uri = "/function/echo".parse().expect("uri");
        assert_eq!(
            split_function_path(&uri).expect("ok"),
            ("echo".into(), DEFAULT_NAMESPACE.into(), "/".into())
        );
        let uri: Uri = "/function/echo.dev/a/b?x=1&y=2".parse().expect("uri");
        assert_eq!(
            split_function_path(&uri).expect("ok"),
            ("echo".into(), "dev".into(), "/a/b?x=1&y=2".into())
        );
        let uri: Uri = "/function/Bad_Name".parse().expect("uri");
        assert!(split_function_path(&uri).is_err());
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<FunctionDeployment>(&Bytes::from_static(
            br#"{"service":"a","envVars":{"k":5}}"#,
        ))
        .expect_err("bad");
        assert!(err.to_string().contains("envVars.k"), "{err}");
        let err = parse_json::<FunctionDeployment>(&Bytes::from_static(br#"{"image":"x"}"#))
            .expect_err("bad");
        assert!(err.to_string().contains("service"), "{err}");
    }
}
