//! Finishing a binding once the worker is labelled: the worker learns the session's token, then the
//! status records the endpoint, and the acquisition is counted once that status is stored.

use std::time::Instant;

use capsule_crds::{CapsulePool, CapsuleSession, SecretKeyRef};
use capsule_protocol::admin::WorkerClient;
use capsule_protocol::heartbeat::SessionBinding;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, warn};

use super::pending::{forget_pending, take_pending};
use super::status::{bound_status, event, write_status};
use super::worker::{endpoint, heartbeat_view_agrees, worker_token};
use super::{migrate, pool_labels, BOUND_CHECK, WAIT_POLL};
use crate::conditions::DesiredCondition;
use crate::context::Context;
use crate::error::Result;
use crate::labels;
use crate::ledger::Acquired;

pub(super) async fn finish_binding(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    pod: Pod,
    first_pass: bool,
    token_hash: &str,
) -> Result<Action> {
    let ns = session.namespace().unwrap_or_default();
    let Some(url) = endpoint(&pod, ctx.config.worker_port) else {
        return Ok(Action::requeue(WAIT_POLL));
    };
    if !heartbeat_view_agrees(ctx, &ns, &pod.name_any(), Some(token_hash)).await {
        warn!(pod = %pod.name_any(), "the heartbeat directory has not seen the worker's label yet; binding on a later pass");
        return Ok(Action::requeue(WAIT_POLL));
    }
    let credential = worker_token(ctx, &ns, &pool.name_any(), &pod);
    if let Some(token) = credential.clone() {
        tell_worker(ctx, session, pool, &pod, &url, token, token_hash).await;
    }
    ctx.index.touch(&ns, &pod.name_any(), Instant::now());
    if let Some(moving) = migrate::under_way(session) {
        forget_pending(ctx, session);
        return migrate::finish(ctx, session, &pod, url, credential, moving).await;
    }
    record_binding(ctx, session, pool, &pod, url, first_pass).await
}

/// Tells the worker before the client can learn the endpoint, so the client's first execution
/// is accepted; the heartbeat reply says the same, so a lost call heals itself.
async fn tell_worker(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    pod: &Pod,
    url: &str,
    token: String,
    token_hash: &str,
) {
    let ns = session.namespace().unwrap_or_default();
    let pool_key = ctx
        .directory
        .as_ref()
        .and_then(|d| d.pool_key(&ns, &pool.name_any()));
    let binding = SessionBinding {
        session: session.name_any(),
        namespace: ns,
        token_sha256: token_hash.to_owned(),
        session_uid: session.metadata.uid.clone(),
        checkpoint_key: None,
    }
    .sealed_with(pool_key.as_deref());
    if let Err(error) = WorkerClient::new(ctx.http.clone(), url, token)
        .bind(&binding)
        .await
    {
        warn!(%error, pod = %pod.name_any(), "the session binding did not reach the worker; its next heartbeat retries");
    }
}

/// Records the binding in the status, then counts it.
async fn record_binding(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    pod: &Pod,
    url: String,
    first_pass: bool,
) -> Result<Action> {
    let (latency_ms, pending) = take_pending(ctx, session);
    // What this process counted outranks a cached status that may predate its write.
    let first_pass = first_pass && !pending.is_some_and(|p| p.attempt_counted);
    let warm_hit = session
        .status
        .as_ref()
        .and_then(|s| s.warm_hit)
        .unwrap_or(true)
        && first_pass;
    let message = format!("bound to worker {}", pod.name_any());
    let ready = DesiredCondition::new("Bound", true, "WorkerBound", message);
    let mut status = bound_status(ctx, session, pod.name_any(), url, ready);
    status.token_secret = Some(SecretKeyRef {
        name: labels::session_token_secret(&session.name_any()),
        key: labels::TOKEN_KEY.into(),
    });
    status.warm_hit = Some(warm_hit);
    status.acquisition_latency_ms = Some(latency_ms);
    write_status(ctx, session, status).await?;

    // Counted only once the status that records the binding is stored: a failed write is retried
    // by a later pass, which must not count the hit a second time.
    count_binding(ctx, session, pool, first_pass, warm_hit, latency_ms);
    info!(worker = %pod.name_any(), warm_hit, latency_ms, "session bound");
    let note = format!("bound to worker {} in {latency_ms} ms", pod.name_any());
    event(ctx, session, EventType::Normal, "Bound", note).await;
    Ok(Action::requeue(BOUND_CHECK))
}

fn count_binding(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    first_pass: bool,
    warm_hit: bool,
    latency_ms: i64,
) {
    let ns = session.namespace().unwrap_or_default();
    let pool_name = pool.name_any();
    let metric = pool_labels(&ns, &pool_name);
    ctx.ledger.record_acquired(
        &(ns, pool_name),
        pool,
        Acquired {
            first_pass,
            warm_hit,
            latency_ms,
        },
    );
    if warm_hit {
        ctx.metrics.hits.get_or_create(&metric).inc();
    }
    ctx.metrics
        .acquisition
        .get_or_create(&metric)
        .observe(latency_ms as f64 / 1000.0);
}
