//! Probes and counters: `GET /healthz`, `GET /readyz` (false while draining) and `GET /v1/stats`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::require_session_or_worker;
use super::error::ApiResult;
use crate::runtime::Runtime;
use capsule_protocol::execute::WorkerStats;

pub(super) async fn healthz(State(runtime): State<Arc<Runtime>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "interpreterPid": runtime.interpreter_pid.load(Relaxed),
    }))
}

pub(super) async fn readyz(State(runtime): State<Arc<Runtime>>) -> Response {
    let ready = runtime.ready.load(Relaxed);
    let draining = runtime.draining.load(Relaxed);
    let body = Json(serde_json::json!({ "ready": ready && !draining, "draining": draining }));
    if ready && !draining {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

pub(super) async fn stats(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<Json<WorkerStats>> {
    require_session_or_worker(&runtime, &headers)?;
    Ok(Json(runtime.worker_stats()))
}
