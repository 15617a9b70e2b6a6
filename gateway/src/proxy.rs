//! The proxy: authenticate a session's bearer against the index, then forward the request to the
//! bound worker and stream its response back chunk by chunk.
//!
//! A client that goes away drops the response body, which drops the upstream response and closes
//! its connection: the worker then cancels the execution, as if the client had called it directly.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use capsule_protocol::auth;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::error::GatewayError;
use crate::index::Resolution;
use crate::route::{split_session_path, Route};
use crate::AppState;

/// Request headers passed to the worker: the session token, the body's type and the trace context.
const REQUEST_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("traceparent"),
];
/// Response headers passed back to the client.
const RESPONSE_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("x-capsule-execution-id"),
];

/// The handler of every path that is not a probe or `/metrics`.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = split_session_path(request.uri().path())
        .and_then(|(_, _, suffix)| Route::match_suffix(&method, suffix));
    let result = match route {
        Some(route) => forward(&state, route, request).await,
        None => Err(GatewayError::NotFound),
    };
    let template = route.map_or("other", Route::template);
    let response = result.unwrap_or_else(|error| {
        if let GatewayError::WorkerUnreachable { worker, cause } = &error {
            warn!(route = template, %worker, cause, "worker unreachable");
            state
                .metrics
                .upstream_errors
                .get_or_create(&route_labels(template))
                .inc();
        }
        error.into_response()
    });
    let status = response.status().as_u16();
    debug!(%method, route = template, status, "request");
    state
        .metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            route: template,
            status_class: crate::metrics::status_class(status),
        })
        .inc();
    state
        .metrics
        .duration
        .get_or_create(&route_labels(template))
        .observe(started.elapsed().as_secs_f64());
    response
}

fn route_labels(route: &'static str) -> crate::metrics::RouteLabels {
    crate::metrics::RouteLabels { route }
}

/// Resolves the session, checks the bearer and forwards.
async fn forward(
    state: &AppState,
    route: Route,
    request: Request,
) -> Result<Response, GatewayError> {
    let (parts, body) = request.into_parts();
    let (namespace, name, suffix) =
        split_session_path(parts.uri.path()).ok_or(GatewayError::NotFound)?;
    let (endpoint, worker, token_sha256) = match state.index.resolve(namespace, name) {
        Resolution::Bound {
            endpoint,
            worker,
            token_sha256,
        } => (endpoint, worker, token_sha256),
        Resolution::NotFound => {
            return Err(GatewayError::SessionNotFound {
                namespace: namespace.into(),
                name: name.into(),
            })
        }
        Resolution::NotBound {
            phase,
            reason,
            message,
        } => {
            return Err(GatewayError::SessionNotBound {
                namespace: namespace.into(),
                name: name.into(),
                phase: phase.as_str(),
                reason: reason.map(|r| format!(", reason {r}")).unwrap_or_default(),
                message,
            })
        }
    };
    let token = auth::bearer_header(&parts.headers).ok_or(GatewayError::Unauthorized)?;
    if !auth::token_matches_sha256(token, &token_sha256) {
        return Err(GatewayError::Unauthorized);
    }
    let body = read_body(body, &parts.headers, state.max_body_bytes).await?;

    let mut url = format!("{}/v1/{suffix}", endpoint.trim_end_matches('/'));
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut upstream = state.client.request(parts.method.clone(), url).body(body);
    for name in &REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(name) {
            upstream = upstream.header(name, value);
        }
    }
    let reply = upstream
        .send()
        .await
        .map_err(|e| GatewayError::WorkerUnreachable {
            worker: worker.clone(),
            cause: cause_of(&e),
        })?;
    Ok(stream_back(state, route, reply))
}

/// The request body, at most `limit` bytes; a declared length over it is refused before reading.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            GatewayError::BodyTooLarge { limit }
        } else {
            GatewayError::MalformedBody(e.to_string())
        }
    })
}

/// The worker's response with its status and headers, its body streamed as it arrives.
fn stream_back(state: &AppState, route: Route, reply: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in &RESPONSE_HEADERS {
        if let Some(value) = reply.headers().get(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let open = OpenStream::new(state.metrics.clone(), route);
    let chunks = reply.bytes_stream().map(move |chunk| {
        if chunk.is_err() {
            open.broke_off();
        }
        chunk
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// One response being streamed: counted in `open_streams` until its body is dropped (finished, or
/// the client went away).
struct OpenStream {
    metrics: Arc<crate::metrics::Metrics>,
    route: Route,
}

impl OpenStream {
    fn new(metrics: Arc<crate::metrics::Metrics>, route: Route) -> Self {
        metrics.open_streams.inc();
        OpenStream { metrics, route }
    }

    fn broke_off(&self) {
        let labels = route_labels(self.route.template());
        self.metrics.upstream_errors.get_or_create(&labels).inc();
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open_streams.dec();
    }
}

/// What went wrong reaching a worker, in a word (the error's text may name addresses).
fn cause_of(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection refused or failed"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "broke off"
    }
}
