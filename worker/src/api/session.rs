//! Session administration: the operator binds and releases sessions (worker credential); the
//! session itself may reset its namespace.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::auth::{require_session, require_worker_credential};
use super::body::{parse_body, parse_query};
use super::error::{reset_error, ApiError, ApiResult};
use crate::runtime::Runtime;
use capsule_protocol::heartbeat::SessionBinding;

pub(super) async fn bind_session(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    require_worker_credential(&runtime, &headers)?;
    let binding: SessionBinding = parse_body(&runtime, body)?;
    runtime
        .bind_session(binding)
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "badBinding", message))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct ReleaseQuery {
    #[serde(default)]
    reset: bool,
}

pub(super) async fn release_session(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    query: Result<Query<ReleaseQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    require_worker_credential(&runtime, &headers)?;
    let query = parse_query(query)?;
    runtime.release_session(query.reset);
    if query.reset {
        runtime.executor.reset(true).await.map_err(reset_error)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn reset(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    require_session(&runtime, &headers)?;
    let size = runtime.executor.reset(false).await.map_err(reset_error)?;
    Ok(Json(serde_json::json!({ "namespaceSize": size })))
}
