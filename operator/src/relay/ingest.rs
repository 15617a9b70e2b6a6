//! `POST /v1/heartbeats`: workers report here with their pool's token. Validated, authenticated and
//! recorded in the in-memory index; nothing is written to the API server per heartbeat.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use capsule_worker::wire::heartbeat::{Heartbeat, HeartbeatReply};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::directory::Directory;
use super::index::{Recorded, WorkerIndex};

/// Largest heartbeat body accepted; a real one is about 1 KiB.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;
/// Longest name (pod, namespace, pool) accepted, as Kubernetes allows.
const MAX_NAME_BYTES: usize = 253;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

/// Ingest counters. Rejections carry only a bounded reason: a forged heartbeat can name any pool.
#[derive(Clone, Default)]
pub struct IngestMetrics {
    pub received: Counter,
    pub rejected: Family<RejectLabels, Counter>,
    pub process_restarts: Counter,
}

impl IngestMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("capsule");
        r.register(
            "heartbeats_received",
            "Heartbeats accepted from workers",
            m.received.clone(),
        );
        r.register(
            "heartbeats_rejected",
            "Heartbeats refused, by reason (unauthenticated, bad_token, unknown_pool, wrong_pool, invalid)",
            m.rejected.clone(),
        );
        r.register(
            "worker_process_restarts",
            "Worker processes seen starting again (a new startedAt in their heartbeat)",
            m.process_restarts.clone(),
        );
        m
    }

    fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}

#[derive(Clone)]
pub struct IngestState {
    pub index: Arc<WorkerIndex>,
    pub directory: Arc<dyn Directory>,
    pub metrics: IngestMetrics,
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/heartbeats", post(heartbeat))
        .layer(DefaultBodyLimit::max(MAX_HEARTBEAT_BYTES))
        .with_state(state)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares hashes so the time taken does not reveal how much of the token matched.
fn tokens_match(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn heartbeat(State(state): State<IngestState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = bearer(&headers) else {
        state.metrics.reject("unauthenticated");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send the pool token",
        );
    };
    let hb: Heartbeat = match serde_json::from_slice(&body) {
        Ok(hb) => hb,
        Err(e) => {
            state.metrics.reject("invalid");
            return refuse(StatusCode::BAD_REQUEST, &format!("invalid heartbeat: {e}"));
        }
    };
    for (field, value) in [
        ("pod", &hb.pod),
        ("namespace", &hb.namespace),
        ("pool", &hb.pool),
    ] {
        if value.is_empty() || value.len() > MAX_NAME_BYTES {
            state.metrics.reject("invalid");
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("invalid heartbeat: {field} must be 1 to 253 bytes"),
            );
        }
    }
    if !hb.cpu_percent.is_finite() || hb.cpu_percent < 0.0 {
        state.metrics.reject("invalid");
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid heartbeat: cpuPercent must be a finite number >= 0",
        );
    }
    let Some(expected) = state.directory.pool_token(&hb.namespace, &hb.pool) else {
        state.metrics.reject("unknown_pool");
        return refuse(StatusCode::NOT_FOUND, "unknown pool");
    };
    if !tokens_match(token, &expected) {
        state.metrics.reject("bad_token");
        return refuse(StatusCode::UNAUTHORIZED, "token does not match the pool's");
    }
    let facts = state.directory.pod(&hb.namespace, &hb.pod);
    let Some(facts) = facts.filter(|f| f.pool.as_deref() == Some(hb.pool.as_str())) else {
        state.metrics.reject("wrong_pool");
        return refuse(
            StatusCode::FORBIDDEN,
            "this pod is not a worker of that pool",
        );
    };
    let bound = facts.binding.is_some();
    if state.index.record(&hb, bound, Instant::now()) == Recorded::ProcessRestarted {
        state.metrics.process_restarts.inc();
    }
    state.metrics.received.inc();
    let reply = HeartbeatReply {
        instructions: Vec::new(),
        session: Some(facts.binding),
    };
    (StatusCode::OK, Json(reply)).into_response()
}
