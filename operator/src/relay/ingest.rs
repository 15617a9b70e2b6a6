//! `POST /v1/heartbeats`: workers report here with their own credential. Validated, authenticated and
//! recorded in the in-memory index; nothing is written to the API server per heartbeat.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use capsule_protocol::auth::{bearer_header, tokens_match};
use capsule_protocol::heartbeat::HeartbeatReply;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::directory::{expected_credential, Directory};
use super::index::{Recorded, WorkerIndex};
use super::limits::IngestLimits;
use super::validate::parse_heartbeat;
use crate::leader::Leadership;

/// Largest heartbeat body accepted; a real one is about 1 KiB.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;

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
            "Heartbeats refused, by reason (unauthenticated, bad_token, unknown_pool, wrong_pool, invalid, too_large, rate_limited_pod, rate_limited_overall, not_leader)",
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
    pub limits: Arc<IngestLimits>,
    /// Only the leader ingests: a follower's index would be thrown away.
    pub leadership: Leadership,
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/heartbeats", post(heartbeat))
        // The body is read with its own bound in the handler, so an oversized one is counted.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// 429 or 503 with the time after which a retry can succeed.
fn refuse_for_now(status: StatusCode, retry_after_seconds: u32, message: &str) -> Response {
    (
        status,
        [(header::RETRY_AFTER, retry_after_seconds.to_string())],
        Json(json!({"error": message})),
    )
        .into_response()
}

async fn heartbeat(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    if !state.leadership.is_leading() {
        state.metrics.reject("not_leader");
        return refuse_for_now(
            StatusCode::SERVICE_UNAVAILABLE,
            1,
            "this operator replica is not the leader: send heartbeats to the operator's Service",
        );
    }
    if state.limits.check_overall().is_err() {
        state.metrics.reject("rate_limited_overall");
        return refuse_for_now(
            StatusCode::TOO_MANY_REQUESTS,
            1,
            "the operator is receiving more heartbeats than its overall limit",
        );
    }
    let Some(token) = bearer_header(&headers) else {
        state.metrics.reject("unauthenticated");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send the worker's credential",
        );
    };
    let body = match axum::body::to_bytes(body, MAX_HEARTBEAT_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            state.metrics.reject("too_large");
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a heartbeat body is at most {MAX_HEARTBEAT_BYTES} bytes"),
            );
        }
    };
    let hb = match parse_heartbeat(&body) {
        Ok(hb) => hb,
        Err(invalid) => {
            state.metrics.reject("invalid");
            return refuse(StatusCode::BAD_REQUEST, &invalid.to_string());
        }
    };
    let Some(key) = state.directory.pool_key(&hb.namespace, &hb.pool) else {
        state.metrics.reject("unknown_pool");
        return refuse(StatusCode::NOT_FOUND, "unknown pool");
    };
    // The credential is checked against the pod the heartbeat names, whether or not that pod is
    // known, so a caller without a credential learns nothing about which pods exist.
    let facts = state.directory.pod(&hb.namespace, &hb.pod);
    let kind = facts.as_ref().map(|f| f.credential).unwrap_or_default();
    if !tokens_match(
        token,
        &expected_credential(&key, &hb.namespace, &hb.pod, kind),
    ) {
        state.metrics.reject("bad_token");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the credential is not the one of the pod this heartbeat names",
        );
    }
    let Some(facts) = facts.filter(|f| f.pool.as_deref() == Some(hb.pool.as_str())) else {
        state.metrics.reject("wrong_pool");
        return refuse(
            StatusCode::FORBIDDEN,
            "this pod is not a worker of that pool",
        );
    };
    if state.limits.check_pod(&hb.namespace, &hb.pod).is_err() {
        state.metrics.reject("rate_limited_pod");
        return refuse_for_now(
            StatusCode::TOO_MANY_REQUESTS,
            1,
            "this pod sends heartbeats faster than its limit",
        );
    }
    let bound = facts.binding.is_some();
    if state.index.record(&hb, bound, Instant::now()) == Recorded::ProcessRestarted {
        state.metrics.process_restarts.inc();
    }
    state.metrics.received.inc();
    let reply = HeartbeatReply {
        session: Some(facts.binding.map(|b| b.sealed_with(Some(&key)))),
    };
    (StatusCode::OK, Json(reply)).into_response()
}
