//! The worker's HTTP API (axum). Routes, auth and bodies are documented in worker/README.md.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::executor::{ResetError, SubmitError};
use crate::interpreter::{CheckpointFrame, ToDriver};
use crate::output_queue::OutputQueue;
use crate::runtime::Runtime;
use crate::session::SessionAuth;
use crate::warn_once::WarnOnce;
use capsule_protocol::auth::bearer_header;
use capsule_protocol::execute::{
    CancelReply, Checkpoint, ErrorBody, ExecuteRequest, InputReply, NamespaceListing,
    PromiseReject, PromiseResolve, EXECUTION_ID_HEADER, MAX_METADATA_ENTRIES,
    MAX_NAMESPACE_ENTRIES, MAX_NAMESPACE_NAME_BYTES, MAX_NAMESPACE_TYPE_BYTES, NDJSON_CONTENT_TYPE,
};
use capsule_protocol::heartbeat::SessionBinding;
use capsule_protocol::trace::{is_valid_traceparent, truncate, TraceEvent, TraceEventKind};

/// How long `GET /v1/checkpoint` waits for the interpreter.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(10);

static BAD_TRACEPARENT: WarnOnce = WarnOnce::new();

/// An HTTP error reply with an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

pub fn router(runtime: Arc<Runtime>) -> Router {
    let limit = runtime.config.max_request_bytes as usize;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/session", put(bind_session).delete(release_session))
        .route("/v1/executions", post(execute))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/input", post(answer_input))
        .route("/v1/reset", post(reset))
        .route("/v1/checkpoint", get(checkpoint))
        .route(
            "/v1/checkpoints",
            post(crate::checkpoint::api::create).get(crate::checkpoint::api::list),
        )
        .route(
            "/v1/checkpoints/{id}/restore",
            post(crate::checkpoint::api::restore),
        )
        .route("/v1/namespace", get(namespace))
        .route("/v1/promises/{id}/resolve", post(resolve_promise))
        .route("/v1/promises/{id}/reject", post(reject_promise))
        .route("/v1/stats", get(stats))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "notFound", "no such endpoint") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(runtime)
}

/// Decodes a JSON request body read in full: anything that is not valid JSON for `T` is a 400
/// `malformedBody`.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformedBody",
            format!("request body is not valid JSON for this endpoint: {error}"),
        )
    })
}

/// Decodes a `POST /v1/executions` body and checks its bounds.
pub fn decode_execute_request(bytes: &[u8]) -> ApiResult<ExecuteRequest> {
    let request: ExecuteRequest = decode_body(bytes)?;
    if request.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "tooMuchMetadata",
            format!("metadata holds at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    Ok(request)
}

fn read_body(runtime: &Runtime, body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bodyTooLarge",
                format!(
                    "request body exceeds the limit of {} bytes (CAPSULE_MAX_REQUEST_BYTES)",
                    runtime.config.max_request_bytes
                ),
            )
        } else {
            ApiError::new(rejection.status(), "badBody", rejection.body_text())
        }
    })
}

fn parse_body<T: DeserializeOwned>(
    runtime: &Runtime,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    decode_body(&read_body(runtime, body)?)
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    bearer_header(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`",
        )
    })
}

pub(crate) fn require_session(runtime: &Runtime, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    match runtime.session.check_session_token(token) {
        SessionAuth::Accepted => Ok(()),
        SessionAuth::NoSession => Err(ApiError::new(
            StatusCode::CONFLICT,
            "noSession",
            "no session holds this worker; it refuses executions until the operator binds one",
        )),
        SessionAuth::WrongToken => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not the token of the session bound to this worker",
        )),
    }
}

fn require_worker_credential(runtime: &Runtime, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    if runtime.session.check_worker_token(token) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not this worker's credential",
        ))
    }
}

pub(crate) fn require_session_or_worker(runtime: &Runtime, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    if runtime.session.check_worker_token(token)
        || runtime.session.check_session_token(token) == SessionAuth::Accepted
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is neither the worker credential nor the bound session's token",
        ))
    }
}

async fn healthz(State(runtime): State<Arc<Runtime>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "interpreterPid": runtime.interpreter_pid.load(Relaxed),
    }))
}

async fn readyz(State(runtime): State<Arc<Runtime>>) -> Response {
    let ready = runtime.ready.load(Relaxed);
    let draining = runtime.draining.load(Relaxed);
    let body = Json(serde_json::json!({ "ready": ready && !draining, "draining": draining }));
    if ready && !draining {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn bind_session(
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
struct ReleaseQuery {
    #[serde(default)]
    reset: bool,
}

async fn release_session(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    query: Result<Query<ReleaseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    require_worker_credential(&runtime, &headers)?;
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "badQuery", rejection.body_text())
    })?;
    runtime.release_session(query.reset);
    if query.reset {
        runtime.executor.reset(true).await.map_err(reset_error)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Dropped with the response body: tells the executor the client went away.
struct ConsumerGuard(Arc<OutputQueue>);

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.close_consumer();
        }
    }
}

async fn execute(
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
    let traceparent = headers
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
        .map(str::to_owned);
    let (id, queue) = runtime
        .executor
        .submit(&runtime, request, traceparent)
        .map_err(|SubmitError::QueueFull { limit }| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queueFull",
                format!(
                    "{limit} executions are already waiting (CAPSULE_EXECUTION_QUEUE_LIMIT); retry later"
                ),
            )
        })?;
    let guard = ConsumerGuard(queue);
    let execution_id = id.clone();
    let stream = futures::stream::unfold(guard, move |guard| {
        let execution_id = execution_id.clone();
        async move {
            let batch = guard.0.next_batch().await?;
            let mut chunk = Vec::with_capacity(256);
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
    Ok(response)
}

async fn cancel(
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

async fn answer_input(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    require_session(&runtime, &headers)?;
    let reply: InputReply = parse_body(&runtime, body)?;
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

fn reset_error(error: ResetError) -> ApiError {
    match error {
        ResetError::QueueFull { limit } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queueFull",
            format!("{limit} executions are already waiting (CAPSULE_EXECUTION_QUEUE_LIMIT)"),
        ),
        ResetError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the worker is stopping",
        ),
        ResetError::Failed(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "resetFailed",
            format!("reset failed: {message}"),
        ),
    }
}

async fn reset(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    require_session(&runtime, &headers)?;
    let size = runtime.executor.reset(false).await.map_err(reset_error)?;
    Ok(Json(serde_json::json!({ "namespaceSize": size })))
}

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

async fn checkpoint(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Checkpoint>> {
    require_session_or_worker(&runtime, &headers)?;
    let Query(metadata) = query.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "badQuery", rejection.body_text())
    })?;
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "tooMuchMetadata",
            format!("metadata holds at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    let frame = ask_driver(&runtime, false).await?;
    Ok(Json(Checkpoint {
        names: frame.names,
        functions: frame.functions,
        classes: frame.classes,
        modules: frame.modules,
        estimated_bytes: frame.estimated_bytes,
        unpicklable: frame.unpicklable,
        taken_at: jiff::Timestamp::now().to_string(),
        metadata,
    }))
}

/// `GET /v1/namespace` (worker credential only, for the sidecar's Namespace view): names, type names and
/// sizes, never values, bounded here whatever the driver sent.
async fn namespace(
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
    if (entries.len() as u64) < frame.names {
        truncated = true;
    }
    NamespaceListing {
        names: frame.names,
        functions: frame.functions,
        classes: frame.classes,
        modules: frame.modules,
        estimated_bytes: frame.estimated_bytes,
        unpicklable: frame.unpicklable,
        entries,
        truncated,
        taken_at: jiff::Timestamp::now().to_string(),
    }
}

fn no_promise() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "noSuchPromise",
        "no pending promise with this id",
    )
}

async fn resolve_promise(
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

async fn reject_promise(
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

async fn stats(
    State(runtime): State<Arc<Runtime>>,
    headers: HeaderMap,
) -> ApiResult<Json<capsule_protocol::execute::WorkerStats>> {
    require_session_or_worker(&runtime, &headers)?;
    Ok(Json(runtime.worker_stats()))
}
