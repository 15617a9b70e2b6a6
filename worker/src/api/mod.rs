//! The worker's HTTP API (axum). Routes, auth and bodies are documented in worker/README.md; this
//! file maps each route to its handler, the handlers live one concern per file beside it.

mod auth;
mod body;
mod error;
mod execute;
mod health;
mod namespace;
mod promises;
mod session;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;

use crate::runtime::Runtime;

pub(crate) use auth::{require_session, require_session_or_worker};
pub use body::{decode_body, decode_execute_request};
pub use error::{ApiError, ApiResult};
pub use namespace::bounded_listing;

pub fn router(runtime: Arc<Runtime>) -> Router {
    let limit = runtime.config.max_request_bytes as usize;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/v1/session",
            put(session::bind_session).delete(session::release_session),
        )
        .route("/v1/executions", post(execute::execute))
        .route("/v1/executions/{id}/cancel", post(execute::cancel))
        .route("/v1/executions/{id}/input", post(execute::answer_input))
        .route("/v1/reset", post(session::reset))
        .route("/v1/checkpoint", get(namespace::checkpoint))
        .route(
            "/v1/checkpoints",
            post(crate::checkpoint::api::create).get(crate::checkpoint::api::list),
        )
        .route(
            "/v1/checkpoints/{id}/restore",
            post(crate::checkpoint::api::restore),
        )
        .route("/v1/namespace", get(namespace::namespace))
        .route("/v1/promises/{id}/resolve", post(promises::resolve_promise))
        .route("/v1/promises/{id}/reject", post(promises::reject_promise))
        .route("/v1/stats", get(health::stats))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "notFound", "no such endpoint") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(runtime)
}
