//! `POST /v1/heartbeats`: workers report here with their own credential. Validated, authenticated and
//! recorded in the in-memory index; nothing is written to the API server per heartbeat.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use capsule_protocol::auth::{bearer_header, tokens_match};
use capsule_protocol::heartbeat::{Heartbeat, HeartbeatReply, WorkerState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::directory::{expected_credential, Directory, PodFacts};
use super::index::{Recorded, WorkerIndex};
use super::limits::IngestLimits;
use super::validate::parse_heartbeat;
use super::wakeups::PoolWakeups;
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
    /// Where a worker announcing itself idle before its pod is Ready wakes its pool's sessions.
    pub wakeups: Arc<PoolWakeups>,
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/heartbeats", post(heartbeat))
        // The body is read with its own bound in the handler, so an oversized one is counted.
        .layer(DefaultBodyLimit::disable())
        // One reference count per request rather than a clone of every handle in the state.
        .with_state(Arc::new(state))
}

/// A refused heartbeat: the bounded reason it is counted under, and the answer to the worker.
struct Refusal {
    reason: &'static str,
    status: StatusCode,
    /// Seconds after which a retry can succeed (429 and 503).
    retry_after: Option<u32>,
    message: Cow<'static, str>,
}

impl Refusal {
    fn new(
        reason: &'static str,
        status: StatusCode,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Refusal {
            reason,
            status,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Refused for now: a retry a second later can succeed.
    fn for_now(reason: &'static str, status: StatusCode, message: &'static str) -> Self {
        Refusal {
            retry_after: Some(1),
            ..Refusal::new(reason, status, message)
        }
    }

    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.message}));
        match self.retry_after {
            Some(seconds) => (
                self.status,
                [(header::RETRY_AFTER, seconds.to_string())],
                body,
            )
                .into_response(),
            None => (self.status, body).into_response(),
        }
    }
}

async fn heartbeat(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, &headers, body).await {
        Ok(reply) => (StatusCode::OK, Json(reply)).into_response(),
        Err(refusal) => {
            state.metrics.reject(refusal.reason);
            refusal.into_response()
        }
    }
}

/// The checks in the order a refusal is cheapest, then the record and the reply.
async fn accept(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<HeartbeatReply, Refusal> {
    admit(state)?;
    let token = bearer_header(headers).ok_or_else(|| {
        Refusal::new(
            "unauthenticated",
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send the worker's credential",
        )
    })?;
    let hb = read_heartbeat(body).await?;
    let (key, facts) = authenticate(state, token, &hb)?;
    if state.limits.check_pod(&hb.namespace, &hb.pod).is_err() {
        return Err(Refusal::for_now(
            "rate_limited_pod",
            StatusCode::TOO_MANY_REQUESTS,
            "this pod sends heartbeats faster than its limit",
        ));
    }
    let bound = facts.binding.is_some();
    if state.index.record(&hb, bound, Instant::now()) == Recorded::ProcessRestarted {
        state.metrics.process_restarts.inc();
    }
    state.metrics.received.inc();
    if announces_idle(&hb, &facts) {
        state.wakeups.wake(&hb.namespace, &hb.pool);
    }
    Ok(HeartbeatReply {
        session: Some(facts.binding.map(|b| b.sealed_with(Some(&key)))),
    })
}

/// An unbound worker whose pod is not Ready yet says it is idle: sessions waiting on its pool may
/// take it now rather than after the next readiness probe.
fn announces_idle(hb: &Heartbeat, facts: &PodFacts) -> bool {
    hb.state == WorkerState::Idle
        && hb.session.is_none()
        && hb.warmup_failure.is_none()
        && facts.binding.is_none()
        && !facts.ready
}

/// Refusals that need nothing from the request: not the leader, or over the overall rate.
fn admit(state: &IngestState) -> Result<(), Refusal> {
    if !state.leadership.is_leading() {
        return Err(Refusal::for_now(
            "not_leader",
            StatusCode::SERVICE_UNAVAILABLE,
            "this operator replica is not the leader: send heartbeats to the operator's Service",
        ));
    }
    if state.limits.check_overall().is_err() {
        return Err(Refusal::for_now(
            "rate_limited_overall",
            StatusCode::TOO_MANY_REQUESTS,
            "the operator is receiving more heartbeats than its overall limit",
        ));
    }
    Ok(())
}

/// Reads the body within [`MAX_HEARTBEAT_BYTES`] and validates it.
async fn read_heartbeat(body: Body) -> Result<Heartbeat, Refusal> {
    let Ok(body) = axum::body::to_bytes(body, MAX_HEARTBEAT_BYTES).await else {
        return Err(Refusal::new(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a heartbeat body is at most {MAX_HEARTBEAT_BYTES} bytes"),
        ));
    };
    parse_heartbeat(&body)
        .map_err(|invalid| Refusal::new("invalid", StatusCode::BAD_REQUEST, invalid.to_string()))
}

/// The pool's key and the facts of the pod the heartbeat names, once its credential matches and
/// the pod belongs to that pool.
fn authenticate(
    state: &IngestState,
    token: &str,
    hb: &Heartbeat,
) -> Result<(String, PodFacts), Refusal> {
    let Some(key) = state.directory.pool_key(&hb.namespace, &hb.pool) else {
        return Err(Refusal::new(
            "unknown_pool",
            StatusCode::NOT_FOUND,
            "unknown pool",
        ));
    };
    // The credential is checked against the pod the heartbeat names, whether or not that pod is
    // known, so a caller without a credential learns nothing about which pods exist.
    let facts = state.directory.pod(&hb.namespace, &hb.pod);
    let kind = facts.as_ref().map(|f| f.credential).unwrap_or_default();
    if !tokens_match(
        token,
        &expected_credential(&key, &hb.namespace, &hb.pod, kind),
    ) {
        return Err(Refusal::new(
            "bad_token",
            StatusCode::UNAUTHORIZED,
            "the credential is not the one of the pod this heartbeat names",
        ));
    }
    let Some(facts) = facts.filter(|f| f.pool.as_deref() == Some(hb.pool.as_str())) else {
        return Err(Refusal::new(
            "wrong_pool",
            StatusCode::FORBIDDEN,
            "this pod is not a worker of that pool",
        ));
    };
    Ok((key, facts))
}
