//! `/system/*`: functions (list, deploy, update, delete, status, scale), namespaces, info,
//! async dead letters, and `/metrics`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{App, parse_json, resolve_namespace};
use crate::error::GatewayError;
use crate::model::{DeleteFunctionRequest, FunctionDeployment, ScaleServiceRequest, validate_name};

#[derive(Debug, Deserialize)]
pub(super) struct NamespaceQuery {
    namespace: Option<String>,
}

impl NamespaceQuery {
    /// The namespace asked for, defaulted and checked.
    pub(super) fn resolve(&self, default: &str) -> Result<String, GatewayError> {
        resolve_namespace(self.namespace.as_deref(), default)
    }

    /// The namespace asked for, if any.
    pub(super) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|ns| !ns.is_empty())
    }
}

pub(super) async fn list_functions(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, GatewayError> {
    let ns = q.resolve(&app.function_namespace)?;
    let mut functions = app.provider.list(&ns).await?;
    for f in &mut functions {
        f.invocation_count = app
            .metrics
            .invocation_count(&format!("{}.{}", f.name, f.namespace));
    }
    Ok(axum::Json(functions).into_response())
}

pub(super) async fn function_status(
    State(app): App,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, GatewayError> {
    let ns = q.resolve(&app.function_namespace)?;
    validate_name("function", &name).map_err(GatewayError::BadRequest)?;
    let mut status = app.provider.status(&name, &ns).await?;
    status.invocation_count = app.metrics.invocation_count(&format!("{name}.{ns}"));
    Ok(axum::Json(status).into_response())
}

pub(super) async fn deploy_function(
    State(app): App,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let mut d: FunctionDeployment = parse_json(&body)?;
    crate::limits::validate_deployment(&mut d, app.max_replicas, &app.function_namespace)?;
    app.provider.deploy(d).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn update_function(
    State(app): App,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let mut d: FunctionDeployment = parse_json(&body)?;
    crate::limits::validate_deployment(&mut d, app.max_replicas, &app.function_namespace)?;
    app.provider.update(d).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn delete_function(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: DeleteFunctionRequest = parse_json(&body)?;
    validate_name("function", &req.function_name)
        .map_err(|e| GatewayError::BadRequest(format!("field `functionName`: {e}")))?;
    let ns = resolve_namespace(
        req.namespace.as_deref().or(q.namespace.as_deref()),
        &app.function_namespace,
    )?;
    app.provider.delete(&req.function_name, &ns).await?;
    app.activity.forget(&format!("{}.{ns}", req.function_name));
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn scale_function(
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
    let ns = resolve_namespace(
        req.namespace.as_deref().or(q.namespace.as_deref()),
        &app.function_namespace,
    )?;
    let function = app.provider.status(&name, &ns).await?;
    crate::limits::check_scale(req.replicas, function.labels.as_ref(), app.max_replicas)?;
    app.provider.scale(&name, &ns, req.replicas).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn list_namespaces(State(app): App) -> Result<Response, GatewayError> {
    Ok(axum::Json(app.provider.namespaces().await?).into_response())
}

/// `/system/info` in faas-provider's shape (`provider`, `orchestration`, `version.sha`,
/// `version.release`), so the OpenFaaS gateway can use this gateway as its provider.
pub(super) async fn info(State(app): App) -> Response {
    axum::Json(app.provider.info()).into_response()
}

pub(super) async fn metrics(State(app): App) -> Response {
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
