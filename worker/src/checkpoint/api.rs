//! `POST /v1/checkpoints`, `GET /v1/checkpoints` and `POST /v1/checkpoints/{id}/restore`. The
//! session token for all three; the restore also takes the worker credential (the operator moving
//! a session here). Errors carry a stable `code` (docs/checkpoints.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use tokio::sync::oneshot;

use crate::api::{require_session, require_session_or_worker, ApiError, ApiResult};
use crate::error::{Error, Result};
use crate::executor::CheckpointWork;
use crate::runtime::Runtime;
use capsule_protocol::checkpoint::{CheckpointCreated, CheckpointList, CheckpointRestored};

fn api_error(error: Error) -> ApiError {
    let status = match &error {
        Error::CheckpointsDisabled => StatusCode::SERVICE_UNAVAILABLE,
        Error::CheckpointNotFound { .. } => StatusCode::NOT_FOUND,
        Error::CheckpointTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::CheckpointCorrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::CheckpointBusy => StatusCode::CONFLICT,
        Error::InterpreterGone | Error::InterpreterTimeout => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, super::error_code(&error), error.to_string())
}

/// Queues `work` on the executor and waits for its answer.
async fn run<T>(
    runtime: &Runtime,
    work: impl FnOnce(oneshot::Sender<Result<T>>) -> CheckpointWork,
) -> ApiResult<T> {
    if runtime.checkpoint_store.is_none() {
        return Err(api_error(Error::CheckpointsDisabled));
    }
    let (tx, rx) = oneshot::channel();
    runtime.executor.checkpoint(work(tx)).map_err(api_error)?;
    rx.await
        .map_err(|_| api_error(Error::InterpreterGone))?
        .map_err(api_error)
}

pub async fn create(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<CheckpointCreated>)> {
    require_session(&runtime, &headers)?;
    let created = run(&runtime, CheckpointWork::Create).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<Json<CheckpointList>> {
    require_session(&runtime, &headers)?;
    super::list(&runtime).await.map(Json).map_err(api_error)
}

pub async fn restore(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<CheckpointRestored>> {
    require_session_or_worker(&runtime, &headers)?;
    if runtime.session.checkpoint_identity().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "noSession",
            "no session is bound: the operator binds the session before restoring its checkpoint",
        ));
    }
    let restored = run(&runtime, |tx| CheckpointWork::Restore(id, tx)).await?;
    Ok(Json(restored))
}
