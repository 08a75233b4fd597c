//! The OpenFaaS REST API: `/system/*` ([`system`]), `/function/*` and `/async-function/*`
//! ([`invoke`]), `/system/secrets` ([`secrets`]), `/system/logs` ([`logs`]), `/healthz`, `/metrics`.

mod activity;
mod alert;
mod dead_letters;
mod invoke;
mod logs;
mod secrets;
mod system;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::de::DeserializeOwned;
use tributary_core::queue::AsyncQueue;

use crate::auth::{Guard, require_auth};
use crate::error::GatewayError;
use crate::limits::resolve_namespace;
use crate::metrics::Metrics;
use crate::provider::Provider;

/// Shared state of the API handlers.
pub(crate) struct AppState {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) metrics: Metrics,
    pub(crate) max_body_size: usize,
    pub(crate) max_replicas: u64,
    pub(crate) function_namespace: String,
    pub(crate) callback_allow: crate::callback::CallbackAllow,
    pub(crate) queue: Option<Arc<dyn AsyncQueue>>,
    pub(crate) lag: crate::autoscaler::lag::LagReports,
    pub(crate) activity: crate::activity::Activity,
}

type App = State<Arc<AppState>>;

/// Builds the router; `guard` turns on auth for `/system/*` and the dashboard at `/ui/`.
pub(crate) fn router(state: Arc<AppState>, guard: Option<Arc<Guard>>) -> Router {
    let mut system = Router::new()
        .route(
            "/system/functions",
            get(system::list_functions)
                .post(system::deploy_function)
                .put(system::update_function)
                .delete(system::delete_function),
        )
        .route("/system/function/{name}", get(system::function_status))
        .route(
            "/system/scale-function/{name}",
            post(system::scale_function),
        )
        .route("/system/namespaces", get(system::list_namespaces))
        .route("/system/info", get(system::info))
        .route(
            "/system/secrets",
            get(secrets::list)
                .post(secrets::create)
                .put(secrets::update)
                .delete(secrets::delete),
        )
        .route("/system/logs", get(logs::logs))
        .route("/system/alert", post(alert::alert))
        .route("/system/lag", post(alert::lag))
        .route("/system/activity", get(activity::activity))
        .route("/system/async-queue", get(dead_letters::stats))
        .route("/system/async-dead-letters", get(dead_letters::list))
        .route(
            "/system/async-dead-letters/redrive",
            post(dead_letters::redrive_all),
        )
        .route(
            "/system/async-dead-letters/{id}/redrive",
            post(dead_letters::redrive),
        )
        .route(
            "/system/async-dead-letters/{id}",
            axum::routing::delete(dead_letters::delete),
        );
    if let Some(guard) = &guard {
        system = system.layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            require_auth,
        ));
    }
    let limit = state.max_body_size;
    Router::new()
        .merge(system)
        .merge(crate::ui::router(guard))
        .route("/function/{*rest}", any(invoke::invoke))
        .route("/async-function/{*rest}", any(invoke::invoke_async))
        .route("/healthz", get(|| async { "OK\n" }))
        .route("/metrics", get(system::metrics))
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

/// `/function/*` and `/async-function/*` served without the router's dispatch and middleware
/// (the same handlers and body limit): the proxy's hot path.
pub(crate) fn hot_path(state: Arc<AppState>) -> crate::server::HotPath {
    Arc::new(move |request: Request| {
        let state = state.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if !crate::server::is_hot(path) {
                let message = format!("{path}: only /function/NAME and /async-function/NAME\n");
                return (http::StatusCode::NOT_FOUND, message).into_response();
            }
            let sync = path.starts_with("/function/");
            let request = match within_limit(state.max_body_size, request).await {
                Ok(request) => request,
                Err(response) => return response,
            };
            if sync {
                invoke::invoke(State(state), request).await
            } else {
                invoke::invoke_async(State(state), request).await
            }
        })
    })
}

/// The hot path for callers in this process: the answer's body read whole.
pub(crate) fn loopback(state: Arc<AppState>) -> tributary_core::client::Loopback {
    let hot = hot_path(state);
    Arc::new(move |request: http::Request<Bytes>| {
        let call = hot(request.map(Body::from));
        Box::pin(async move {
            let (parts, body) = call.await.into_parts();
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(body) => http::Response::from_parts(parts, body),
                Err(e) => {
                    let mut broken = http::Response::new(Bytes::from(format!(
                        "reading the function's answer failed: {e}"
                    )));
                    *broken.status_mut() = http::StatusCode::BAD_GATEWAY;
                    broken
                }
            }
        })
    })
}

/// Answers 413 to a request whose declared `Content-Length` is over the limit.
async fn reject_oversized(
    State(limit): State<usize>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    match within_limit(limit, request).await {
        Ok(request) => next.run(request).await,
        Err(response) => response,
    }
}

/// The request back, or 413 when its declared `Content-Length` is over `limit`. The body is
/// read and discarded first (bounded), so the client sees the 413 rather than a reset
/// connection.
async fn within_limit(limit: usize, request: Request) -> Result<Request, Response> {
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
            Err(GatewayError::PayloadTooLarge { limit }.into_response())
        }
        _ => Ok(request),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FunctionDeployment;

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
