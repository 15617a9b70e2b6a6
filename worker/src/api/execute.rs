//! Executions over HTTP: `POST /v1/executions` streams the events as NDJSON while the client
//! reads; cancel and input answers address a running execution by id.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;

use super::auth::require_session;
use super::body::{decode_execute_request, read_body, session_body};
use super::error::{submit_error, ApiError, ApiResult};
use crate::output_queue::OutputQueue;
use crate::runtime::Runtime;
use crate::warn_once::WarnOnce;
use capsule_protocol::execute::{
    CancelReply, InputReply, EXECUTION_ID_HEADER, NDJSON_CONTENT_TYPE,
};
use capsule_protocol::trace::{is_valid_traceparent, TraceEvent, TraceEventKind};

static BAD_TRACEPARENT: WarnOnce = WarnOnce::new();

/// Dropped with the response body: tells the executor the client went away.
struct ConsumerGuard(Arc<OutputQueue>);

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.close_consumer();
        }
    }
}

pub(super) async fn execute(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    require_session(&runtime, &headers)?;
    let request = decode_execute_request(&read_body(&runtime, body)?)?;
    if runtime.draining.load(Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this worker is draining and accepts no new executions",
        ));
    }
    let (id, queue) = runtime
        .executor
        .submit(&runtime, request, traceparent(&headers))
        .map_err(submit_error)?;
    // The executor, woken by the submit, runs first: it hands the code to the interpreter and
    // queues `started`, which then leaves with the headers and `accepted` in one write (one
    // wake-up of the client instead of two, and the interpreter already at work meanwhile).
    tokio::task::yield_now().await;
    Ok(event_stream(id, queue))
}

/// The caller's `traceparent`, when it is one; a malformed one is ignored, not refused.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|value| {
            let valid = is_valid_traceparent(value);
            if !valid {
                BAD_TRACEPARENT.warn(|| tracing::warn!("ignoring a malformed traceparent header"));
            }
            valid
        })
        .map(str::to_owned)
}

/// The NDJSON response that carries the execution's events as the client reads them.
fn event_stream(id: String, queue: Arc<OutputQueue>) -> Response {
    let guard = ConsumerGuard(queue);
    let execution_id = id.clone();
    let stream = futures::stream::unfold(guard, move |guard| {
        let execution_id = execution_id.clone();
        async move {
            let batch = guard.0.next_batch().await?;
            let size = batch.iter().map(|e| e.ndjson_len_hint(&execution_id)).sum();
            let mut chunk = Vec::with_capacity(size);
            for event in &batch {
                event.write_ndjson(&execution_id, &mut chunk);
            }
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), guard))
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(NDJSON_CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(EXECUTION_ID_HEADER, value);
    }
    response
}

pub(super) async fn cancel(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<CancelReply>> {
    require_session(&runtime, &headers)?;
    runtime.stats.cancels_requested.fetch_add(1, Relaxed);
    runtime.trace.send(TraceEvent::new(
        TraceEventKind::CancelRequested,
        &id,
        runtime.session.session_name().as_deref(),
    ));
    let status = if runtime.executor.cancel(&id) {
        "cancelling"
    } else {
        runtime.stats.cancels_noop.fetch_add(1, Relaxed);
        "notRunning"
    };
    Ok(Json(CancelReply {
        execution_id: id,
        status: status.to_owned(),
    }))
}

pub(super) async fn answer_input(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let reply: InputReply = session_body(&runtime, &headers, body)?;
    runtime
        .bridge
        .answer_input(&id, &reply.input_id, reply.value)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "noSuchInput",
                "no pending input request with this id for this execution",
            )
        })?;
    Ok(StatusCode::NO_CONTENT)
}
