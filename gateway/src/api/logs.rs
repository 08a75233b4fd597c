//! `/system/logs`: a function's captured output as OpenFaaS streams it, one JSON object per
//! line (`name`, `namespace`, `instance`, `timestamp`, `text`), with `tail`, `since`,
//! `instance` and `follow`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;

use super::{App, resolve_namespace};
use crate::error::GatewayError;
use crate::model::validate_name;
use crate::provider::LogQuery;

/// The query string, as faas-cli and the OpenFaaS gateway send it.
#[derive(Debug, Deserialize)]
pub(super) struct LogParams {
    name: Option<String>,
    namespace: Option<String>,
    instance: Option<String>,
    since: Option<String>,
    tail: Option<String>,
    follow: Option<String>,
}

impl LogParams {
    fn query(self, default_namespace: &str) -> Result<LogQuery, GatewayError> {
        let bad = |m: String| GatewayError::BadRequest(m);
        let name = self
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("query parameter `name` (the function) is required".into()))?;
        validate_name("function", &name).map_err(bad)?;
        let since = match self.since.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| bad(format!("query parameter `since` must be an RFC 3339 time such as 2026-01-02T15:04:05Z: {e}")))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let tail = match self.tail.as_deref().filter(|s| !s.is_empty()) {
            Some(t) => {
                let n: i64 = t.parse().map_err(|_| {
                    bad(format!(
                        "query parameter `tail` must be a whole number (<= 0: all), not {t:?}"
                    ))
                })?;
                usize::try_from(n).ok().filter(|n| *n > 0)
            }
            None => None,
        };
        let follow = match self.follow.as_deref() {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(bad(format!(
                    "query parameter `follow` must be true or false, not {other:?}"
                )));
            }
        };
        Ok(LogQuery {
            name,
            namespace: resolve_namespace(self.namespace.as_deref(), default_namespace)?,
            instance: self.instance.filter(|i| !i.is_empty()),
            since,
            tail,
            follow,
        })
    }
}

pub(super) async fn logs(
    State(app): App,
    Query(params): Query<LogParams>,
) -> Result<Response, GatewayError> {
    let query = params.query(&app.function_namespace)?;
    let lines = app.provider.logs(query).await?.map(|m| {
        let mut line = serde_json::to_vec(&m).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
