//! The apply step: deletes and creates worker pods as planned, each with its Event, metric and
//! counter. Creations wait while the warm-up code keeps failing.

use std::time::{Duration, Instant};

use capsule_crds::{PoolCounters, WorkerPhase};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::events::publish;
use super::observe::Seen;
use super::plan::{ClassifiedPod, Plan, RemovalReason};
use super::warmup_failing::WarmupFailing;
use super::{new_worker, Pass};
use crate::error::Result;
use crate::relay::index::WorkerRecord;

pub(super) struct Applied {
    pub(super) created: usize,
    /// Why creating a worker failed; the pass fails with it once status is written.
    pub(super) failure: Option<String>,
    /// How long creations are held while the warm-up code keeps raising.
    pub(super) creates_held_for: Option<Duration>,
}

/// `pool_key` is `None` only for an unusable spec, which plans no creations.
pub(super) async fn apply(
    pass: &Pass<'_>,
    seen: &Seen<'_>,
    plan: &mut Plan,
    pool_key: Option<String>,
) -> Result<Applied> {
    delete_workers(pass, seen, &plan.delete).await?;
    // After the deletes, which may have just found the warm-up failing.
    let creates_held_for = pass.with_state(|s| {
        hold_creates_while_warmup_fails(&mut s.warmup_failing, &seen.workers, plan, seen.now)
    });
    let (created, failure) = create_workers(pass, plan.create, &pool_key.unwrap_or_default()).await;
    Ok(Applied {
        created,
        failure,
        creates_held_for,
    })
}

async fn delete_workers(
    pass: &Pass<'_>,
    seen: &Seen<'_>,
    deletes: &[(String, RemovalReason)],
) -> Result<()> {
    let api: Api<Pod> = pass.api();
    for (pod_name, reason) in deletes {
        let outcome = api
            .delete(pod_name, &unchanged_since_listed(seen.pods, pod_name))
            .await;
        pass.ctx
            .ledger
            .record_pod_delete(&pass.key, pod_name, &outcome);
        match outcome {
            Ok(_) => deleted(pass, seen, pod_name, *reason).await,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The resourceVersion makes the delete a compare-and-swap against the session controller and
/// against a stale cache: a worker bound since it was read (its label patch changed the version)
/// is not deleted.
fn unchanged_since_listed(pods: &[Pod], pod_name: &str) -> DeleteParams {
    let listed_pod = pods.iter().find(|p| p.name_any() == pod_name);
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: listed_pod.and_then(|p| p.uid()),
            resource_version: listed_pod.and_then(|p| p.metadata.resource_version.clone()),
        }),
        ..Default::default()
    }
}

/// Counts a deleted worker and says why it went.
async fn deleted(pass: &Pass<'_>, seen: &Seen<'_>, pod_name: &str, reason: RemovalReason) {
    pass.ctx.metrics.removed(&pass.labels, reason);
    pass.with_state(|s| count_removal(&mut s.counters, reason));
    info!(pod = %pod_name, reason = reason.as_str(), "deleted worker");
    let (event_type, event_reason, message) = match reason {
        RemovalReason::WarmupFailed => {
            let error = warmup_error(seen.records.get(pod_name));
            pass.with_state(|s| {
                WarmupFailing::record(&mut s.warmup_failing, error.clone(), seen.now)
            });
            let message = format!("deleted worker {pod_name}: spec.warmup.code raised {error}");
            (EventType::Warning, "WarmupFailed", message)
        }
        _ => (
            EventType::Normal,
            "WorkerDeleted",
            format!("deleted worker {pod_name} ({})", reason.as_str()),
        ),
    };
    publish(pass, event_type, event_reason, "DeleteWorker", message).await;
}

fn count_removal(counters: &mut PoolCounters, reason: RemovalReason) {
    counters.workers_removed += 1;
    match reason {
        RemovalReason::Failed
        | RemovalReason::Stale
        | RemovalReason::WarmupTimeout
        | RemovalReason::WarmupFailed => counters.health.removals += 1,
        RemovalReason::Recycled => counters.workers_recycled += 1,
        _ => {}
    }
}

/// `ExceptionType: message` of a worker's warm-up failure, as its last heartbeat gave it.
fn warmup_error(record: Option<&WorkerRecord>) -> String {
    match record.and_then(|r| r.warmup_failure.as_ref()) {
        Some(failure) => format!("{}: {}", failure.ename, failure.evalue),
        None => "an exception".into(),
    }
}

/// While the warm-up code keeps raising, new workers wait out the backoff; a worker of the current
/// template that warmed up ends it. Returns how long creations are held.
fn hold_creates_while_warmup_fails(
    state: &mut Option<WarmupFailing>,
    workers: &[ClassifiedPod<'_>],
    plan: &mut Plan,
    now: Instant,
) -> Option<Duration> {
    if workers
        .iter()
        .any(|w| w.current && matches!(w.phase, WorkerPhase::Idle | WorkerPhase::Bound))
    {
        *state = None;
    }
    let held_for = state.as_ref()?.creates_held_for(now)?;
    plan.create = 0;
    Some(held_for)
}

/// Creates up to `count` workers, stopping at the first failure; returns how many were created and
/// the failure.
async fn create_workers(pass: &Pass<'_>, count: usize, pool_key: &str) -> (usize, Option<String>) {
    let (pods, secrets) = (pass.api(), pass.api());
    let mut created = 0usize;
    let mut failure = None;
    for _ in 0..count {
        let outcome =
            new_worker::create(&pods, &secrets, pass.pool, pool_key, &pass.ctx.config).await;
        pass.ctx.pod_written(&pass.key, &outcome);
        match outcome {
            Ok(pod) => {
                created += 1;
                let message = format!("created worker {}", pod.name_any());
                publish(
                    pass,
                    EventType::Normal,
                    "WorkerCreated",
                    "CreateWorker",
                    message,
                )
                .await;
            }
            Err(e) => {
                let message = match &e {
                    kube::Error::Api(status) => {
                        format!("creating a worker pod failed: {}", status.message)
                    }
                    other => format!("creating a worker pod failed: {other}"),
                };
                warn!(error = %e, "worker pod create failed");
                let (kind, reason) = (EventType::Warning, "WorkerCreateFailed");
                publish(pass, kind, reason, "CreateWorker", message.clone()).await;
                failure = Some(message);
                break;
            }
        }
    }
    if created > 0 {
        pass.ctx
            .metrics
            .workers_created
            .get_or_create(&pass.labels)
            .inc_by(created as u64);
        info!(count = created, "created workers");
    }
    (created, failure)
}
