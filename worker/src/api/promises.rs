//! `POST /v1/promises/{id}/resolve` and `.../reject`: the client settles a promise the running
//! code is awaiting.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::auth::require_session;
use super::body::parse_body;
use super::error::{ApiError, ApiResult};
use crate::runtime::Runtime;
use capsule_protocol::execute::{PromiseReject, PromiseResolve};

fn no_promise() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "noSuchPromise",
        "no pending promise with this id",
    )
}

pub(super) async fn resolve_promise(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    require_session(&runtime, &headers)?;
    let resolve: PromiseResolve = parse_body(&runtime, body)?;
    runtime
        .bridge
        .resolve(&id, resolve.value)
        .await
        .map_err(|_| no_promise())?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn reject_promise(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    require_session(&runtime, &headers)?;
    let reject: PromiseReject = parse_body(&runtime, body)?;
    runtime
        .bridge
        .reject(&id, reject.reason)
        .await
        .map_err(|_| no_promise())?;
    Ok(StatusCode::NO_CONTENT)
}
