//! What the namespace holds, asked of the driver: `GET /v1/checkpoint` (counts, with the caller's
//! metadata) and `GET /v1/namespace` (names, types and sizes, never values, bounded here).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::auth::{require_session_or_worker, require_worker_credential};
use super::body::{check_metadata_entries, parse_query};
use super::error::{ApiError, ApiResult};
use crate::interpreter::{CheckpointFrame, ToDriver};
use crate::runtime::Runtime;
use capsule_protocol::execute::{
    Checkpoint, NamespaceListing, MAX_NAMESPACE_ENTRIES, MAX_NAMESPACE_NAME_BYTES,
    MAX_NAMESPACE_TYPE_BYTES,
};
use capsule_protocol::trace::truncate;

/// How long `GET /v1/checkpoint` waits for the interpreter.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the driver for its namespace metadata (and the names when `list_names`).
async fn ask_driver(runtime: &Runtime, list_names: bool) -> ApiResult<CheckpointFrame> {
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "interpreterUnavailable",
            "the interpreter did not answer (starting or restarting); retry",
        )
    };
    let (request_id, answer) = runtime.checkpoints.register();
    if runtime
        .writer
        .send(&ToDriver::Checkpoint {
            request_id,
            list_names,
        })
        .await
        .is_err()
    {
        runtime.checkpoints.forget(request_id);
        return Err(unavailable());
    }
    match tokio::time::timeout(CHECKPOINT_TIMEOUT, answer).await {
        Ok(Ok(frame)) => Ok(frame),
        _ => {
            runtime.checkpoints.forget(request_id);
            Err(unavailable())
        }
    }
}

pub(super) async fn checkpoint(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Checkpoint>> {
    require_session_or_worker(&runtime, &headers)?;
    let metadata = parse_query(query)?;
    check_metadata_entries(metadata.len())?;
    let frame = ask_driver(&runtime, false).await?;
    Ok(Json(Checkpoint {
        counts: frame.counts,
        taken_at: jiff::Timestamp::now().to_string(),
        metadata,
    }))
}

/// `GET /v1/namespace` (worker credential only, for the sidecar's Namespace view): names, type names and
/// sizes, never values, bounded here whatever the driver sent.
pub(super) async fn namespace(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<Json<NamespaceListing>> {
    require_worker_credential(&runtime, &headers)?;
    let frame = ask_driver(&runtime, true).await?;
    Ok(Json(bounded_listing(frame)))
}

/// Applies the listing bounds to what the driver reported.
pub fn bounded_listing(frame: CheckpointFrame) -> NamespaceListing {
    let mut truncated = frame.truncated || frame.entries.len() > MAX_NAMESPACE_ENTRIES;
    let mut entries = frame.entries;
    entries.truncate(MAX_NAMESPACE_ENTRIES);
    for entry in &mut entries {
        entry.name = truncate(&entry.name, MAX_NAMESPACE_NAME_BYTES);
        entry.type_name = truncate(&entry.type_name, MAX_NAMESPACE_TYPE_BYTES);
    }
    if (entries.len() as u64) < frame.counts.names {
        truncated = true;
    }
    NamespaceListing {
        counts: frame.counts,
        entries,
        truncated,
        taken_at: jiff::Timestamp::now().to_string(),
    }
}
