//! The async queue's figures and dead letters: `GET /system/async-queue`,
//! `GET /system/async-dead-letters`, redrive (`POST .../{id}/redrive`, `POST .../redrive` for all)
//! and `DELETE /system/async-dead-letters/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tributary_core::queue::AsyncQueue;

use super::{App, AppState};
use crate::error::GatewayError;

/// The most dead letters one redrive-all moves.
const REDRIVE_ALL_MAX: usize = 10_000;

#[derive(Debug, Deserialize)]
pub(super) struct LimitQuery {
    limit: Option<usize>,
}

fn queue(app: &AppState) -> Result<&Arc<dyn AsyncQueue>, GatewayError> {
    app.queue.as_ref().ok_or(GatewayError::NoQueue)
}

/// `GET /system/async-queue`: depth, in flight, oldest age, dead letters.
pub(super) async fn stats(State(app): App) -> Result<Response, GatewayError> {
    Ok(Json(queue(&app)?.stats().await?).into_response())
}

/// `GET /system/async-dead-letters[?limit=N]`: the newest first.
pub(super) async fn list(
    State(app): App,
    Query(q): Query<LimitQuery>,
) -> Result<Response, GatewayError> {
    let records = queue(&app)?
        .dead_letters(q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(Json(records).into_response())
}

/// `POST /system/async-dead-letters/{id}/redrive`: back on the queue, attempts start again.
pub(super) async fn redrive(
    State(app): App,
    Path(id): Path<u64>,
) -> Result<Response, GatewayError> {
    if !queue(&app)?.redrive(id).await? {
        return Err(GatewayError::DeadLetterNotFound { id });
    }
    tracing::info!(id, "dead letter redriven");
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST /system/async-dead-letters/redrive`: every dead letter back on the queue;
/// answers `{"redriven": N}`.
pub(super) async fn redrive_all(State(app): App) -> Result<Response, GatewayError> {
    let queue = queue(&app)?;
    let mut redriven = 0u64;
    for letter in queue.dead_letters(REDRIVE_ALL_MAX).await?.iter().rev() {
        if queue.redrive(letter.id).await? {
            redriven += 1;
        }
    }
    tracing::info!(redriven, "dead letters redriven");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "redriven": redriven })),
    )
        .into_response())
}

/// `DELETE /system/async-dead-letters/{id}`.
pub(super) async fn delete(State(app): App, Path(id): Path<u64>) -> Result<Response, GatewayError> {
    if !queue(&app)?.delete_dead_letter(id).await? {
        return Err(GatewayError::DeadLetterNotFound { id });
    }
    tracing::info!(id, "dead letter deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
