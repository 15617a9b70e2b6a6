//! Giving a session's worker back: reset and return it to the pool, or replace it, per the pool's
//! `spec.recycle.onRelease`. A worker that cannot be reset is replaced: a dirty worker is never
//! handed to the next session.

use capsule_crds::{CapsulePool, CapsuleSession, ReleaseAction};
use capsule_protocol::admin::WorkerClient;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use super::pool_labels;
use super::status::event;
use super::worker::{endpoint, heartbeat_view_agrees, worker_token};
use crate::context::{Context, PoolKey};
use crate::error::Result;
use crate::labels;
use crate::pool::plan;

pub(super) async fn release(ctx: &Context, session: &CapsuleSession, ns: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let bound = bound_workers(ctx, &pods, session, ns).await?;
    if bound.is_empty() {
        return Ok(());
    }
    let pool = super::pool_of(ctx, ns, &session.spec.pool).await?;
    let action = pool
        .as_ref()
        .map(|p| p.spec.recycle.on_release)
        .unwrap_or(ReleaseAction::Replace);
    let key = (ns.to_string(), session.spec.pool.clone());
    for pod in bound {
        let pod_name = pod.name_any();
        ctx.claims.release(ns, &pod_name);
        let reset = action == ReleaseAction::Reset
            && revoke(ctx, &key, &pods, &pod_name).await?
            && reset_worker(ctx, session, ns, &pod).await;
        if reset {
            return_to_pool(ctx, &key, &pods, &pod_name).await?;
        } else if !replace(ctx, session, ns, &pods, pool.as_ref(), &pod_name).await? {
            continue;
        }
        let note = format!("released worker {pod_name}");
        event(ctx, session, EventType::Normal, "Released", note).await;
    }
    Ok(())
}

/// The workers labelled with the session. A worker already being deleted is gone for good, and
/// counted by whoever deleted it. Read from the pod cache while it shows every write this process
/// made to the pool's pods (every binding it made among them); otherwise listed fresh, since the
/// finalizer goes once this finds none.
async fn bound_workers(
    ctx: &Context,
    pods: &Api<Pod>,
    session: &CapsuleSession,
    ns: &str,
) -> Result<Vec<Pod>> {
    let name = session.name_any();
    let live_and_bound = |p: &Pod| {
        p.metadata.deletion_timestamp.is_none() && p.labels().get(labels::SESSION) == Some(&name)
    };
    let key = (ns.to_string(), session.spec.pool.clone());
    let cached = ctx
        .directory
        .as_ref()
        .and_then(|d| d.pool_pods(ns, &session.spec.pool))
        .filter(|cached| ctx.ledger.cache_shows_writes(&key, cached));
    let candidates = match cached {
        Some(cached) => cached,
        None => {
            let selector = format!("{}={}", labels::SESSION, name);
            pods.list(&ListParams::default().labels(&selector))
                .await?
                .items
        }
    };
    Ok(candidates.into_iter().filter(live_and_bound).collect())
}

/// Takes the token's hash off the worker, which ends the binding in heartbeat replies, while the
/// session label keeps other sessions away; true once heartbeat ingest's view shows it, so no reply
/// can bind the session again after the reset below.
async fn revoke(ctx: &Context, key: &PoolKey, pods: &Api<Pod>, pod_name: &str) -> Result<bool> {
    let patch = json!({"metadata": {"annotations": {labels::SESSION_TOKEN_SHA256: null}}});
    let outcome = pods
        .patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    ctx.pod_written(key, &outcome);
    match outcome {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    Ok(heartbeat_view_agrees(ctx, &key.0, pod_name, None).await)
}

/// Asks the worker to wipe the session's state; false when it cannot be reached or refuses.
async fn reset_worker(ctx: &Context, session: &CapsuleSession, ns: &str, pod: &Pod) -> bool {
    let (Some(url), Some(token)) = (
        endpoint(pod, ctx.config.worker_port),
        worker_token(ctx, ns, &session.spec.pool, pod),
    ) else {
        return false;
    };
    WorkerClient::new(ctx.http.clone(), url, token)
        .release(true)
        .await
        .is_ok()
}

/// Unlabels a reset worker, which makes it idle again.
async fn return_to_pool(
    ctx: &Context,
    key: &PoolKey,
    pods: &Api<Pod>,
    pod_name: &str,
) -> Result<()> {
    let patch = json!({"metadata": {
        "labels": {labels::SESSION: null},
        "annotations": {labels::SESSION_TOKEN_SHA256: null, labels::SESSION_UID: null},
    }});
    let outcome = pods
        .patch(pod_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    ctx.pod_written(key, &outcome);
    outcome?;
    info!(worker = %pod_name, "released worker (reset)");
    Ok(())
}

/// Deletes the worker and counts its removal; false when it was deleted meanwhile, by the pool
/// controller or an earlier pass, which counted it.
async fn replace(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    pods: &Api<Pod>,
    pool: Option<&CapsulePool>,
    pod_name: &str,
) -> Result<bool> {
    let key = (ns.to_string(), session.spec.pool.clone());
    let outcome = pods.delete(pod_name, &DeleteParams::default()).await;
    ctx.ledger.record_pod_delete(&key, pod_name, &outcome);
    match outcome {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    ctx.ledger.count_released_worker(&key, pool);
    ctx.metrics.removed(
        &pool_labels(ns, &session.spec.pool),
        plan::RemovalReason::Released,
    );
    info!(worker = %pod_name, "released worker (replaced)");
    Ok(true)
}
