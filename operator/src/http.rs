//! The operator's HTTP server: Prometheus metrics and the health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::exposition;
use crate::health::Health;

#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// OpenMetrics (with exemplars) for scrapers that ask for it, the classic text format otherwise.
async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, exposition::OPENMETRICS)],
            body,
        )
            .into_response()
    } else {
        let text = exposition::openmetrics_to_prometheus_text(&body);
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            text,
        )
            .into_response()
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.healthy() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "controller loop stopped")
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.health.ready() {
        (StatusCode::OK, "ready")
    } else if !state.health.healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "controller loop stopped")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet")
    }
}

/// Serves metrics and health until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serves `app` until `shutdown` is cancelled.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
