//! `/system/secrets`: list (names only), create, update and delete, in OpenFaaS's JSON
//! (`name`, `namespace`, `value` or base64 `rawValue`).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::system::NamespaceQuery;
use super::{App, AppState, parse_json, resolve_namespace};
use crate::error::GatewayError;
use crate::model::{Secret, validate_secret_name};

/// Parses a secret from `body`, checking its name and defaulting its namespace (from the body,
/// else the `namespace` query parameter).
fn parse_secret(
    body: &Bytes,
    query: &NamespaceQuery,
    default_namespace: &str,
) -> Result<Secret, GatewayError> {
    let mut secret: Secret = parse_json(body)?;
    validate_secret_name(&secret.name)
        .map_err(|e| GatewayError::BadRequest(format!("field `name`: {e}")))?;
    let namespace = secret
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .or(query.namespace());
    secret.namespace = Some(resolve_namespace(namespace, default_namespace)?);
    Ok(secret)
}

pub(super) async fn list(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, GatewayError> {
    let secrets = app
        .provider
        .secrets(&q.resolve(&app.function_namespace)?)
        .await?;
    Ok(axum::Json(secrets).into_response())
}

/// What a request does to a secret.
#[derive(Debug, Clone, Copy)]
enum Change {
    Create,
    Update,
    Delete,
}

async fn change(
    app: &AppState,
    query: &NamespaceQuery,
    body: &Bytes,
    change: Change,
) -> Result<Response, GatewayError> {
    let secret = parse_secret(body, query, &app.function_namespace)?;
    let name = secret.name.clone();
    let namespace = secret.namespace.clone().unwrap_or_default();
    let (status, done) = match change {
        Change::Create => {
            app.provider.create_secret(secret).await?;
            (StatusCode::CREATED, "secret created")
        }
        Change::Update => {
            app.provider.update_secret(secret).await?;
            (StatusCode::ACCEPTED, "secret updated")
        }
        Change::Delete => {
            app.provider.delete_secret(&name, &namespace).await?;
            (StatusCode::ACCEPTED, "secret deleted")
        }
    };
    tracing::info!(secret = %name, %namespace, "{done}");
    Ok(status.into_response())
}

pub(super) async fn create(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    change(&app, &q, &body, Change::Create).await
}

pub(super) async fn update(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    change(&app, &q, &body, Change::Update).await
}

pub(super) async fn delete(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    change(&app, &q, &body, Change::Delete).await
}
