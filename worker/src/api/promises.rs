//! `POST /v1/promises/{id}/resolve` and `.../reject`: the client settles a promise the running
//! code is awaiting.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::body::session_body;
use super::error::{ApiError, ApiResult};
use crate::bridge::SettleError;
use crate::runtime::Runtime;
use capsule_protocol::execute::{PromiseReject, PromiseResolve};

/// 204 once settled; 404 when no promise with that id is pending.
fn settled(result: Result<(), SettleError>) -> ApiResult<StatusCode> {
    result.map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "noSuchPromise",
            "no pending promise with this id",
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn resolve_promise(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let resolve: PromiseResolve = session_body(&runtime, &headers, body)?;
    settled(runtime.bridge.resolve(&id, resolve.value).await)
}

pub(super) async fn reject_promise(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let reject: PromiseReject = session_body(&runtime, &headers, body)?;
    settled(runtime.bridge.reject(&id, reject.reason).await)
}
