//! The session gateway: clients outside the cluster reach a session's worker through
//! `/v1/sessions/{namespace}/{name}/...`. The gateway keeps an [`index`] of sessions and their
//! bound pods from watches ([`watch`]), authenticates the session token against the hash on the
//! bound pod, and [`proxy`]-forwards the worker API, streaming responses. Stateless: any number of
//! replicas serve the same sessions. See docs/gateway.md.

pub mod error;
pub mod index;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

pub use error::GatewayError;

/// Default bound of a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// What every request handler shares.
pub struct AppState {
    pub index: Arc<index::Index>,
    pub client: reqwest::Client,
    pub metrics: Arc<metrics::Metrics>,
    pub registry: Registry,
    pub max_body_bytes: usize,
}

impl AppState {
    pub fn new(index: Arc<index::Index>, max_body_bytes: usize) -> Result<Self, GatewayError> {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        Ok(AppState {
            index,
            client: upstream_client()?,
            metrics,
            registry,
            max_body_bytes,
        })
    }
}

/// The pooled HTTP/1.1 client to workers: kept-alive connections and no Nagle delay, so the
/// gateway adds a loopback-scale hop, not a handshake, to each call. No overall timeout: an
/// execution streams as long as its code runs.
pub fn upstream_client() -> Result<reqwest::Client, GatewayError> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| GatewayError::Startup(format!("HTTP client: {e}")))
}

/// Probes, metrics, and the proxy for everything else.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(proxy::handle)
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.index.ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the session and pod watches have not listed yet",
        )
    }
}

async fn metrics_text(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    use capsule_telemetry::exposition;
    let indexed = state.index.sessions_indexed() as i64;
    state.metrics.sessions_indexed.set(indexed);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    // OpenMetrics when asked for; else the classic text format `promtool check metrics` reads.
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], text).into_response()
    } else {
        let text = exposition::openmetrics_to_prometheus_text(&text);
        ([(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)], text).into_response()
    }
}

/// Serves `app` on `listener` (no Nagle delay on accepted connections) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
