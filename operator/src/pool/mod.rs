//! The CapsulePool controller: keeps each pool's warm workers at its target and reports status.

pub mod plan;
pub mod spec_check;
pub mod status;
pub mod token;
pub mod worker_pod;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, PoolCounters};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::context::{Context, PoolKey};
use crate::error::{backoff, Error, Result};
use crate::labels;
use crate::metrics::{ControllerLabels, ControllerName, PoolLabels, TraceLabels};

/// Periodic resync even when nothing changes, so drift the watches missed is repaired.
const RESYNC: Duration = Duration::from_secs(60);

fn key_of(pool: &CapsulePool) -> Result<PoolKey> {
    let ns = pool
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(pool.name_any()))?;
    Ok((ns, pool.name_any()))
}

fn labels_of(key: &PoolKey) -> PoolLabels {
    PoolLabels {
        namespace: key.0.clone(),
        pool: key.1.clone(),
    }
}

/// Reconciles one pool. Idempotent and level-triggered: it reads the pool's pods fresh from the API
/// server (not a cache) so a pod it just created is never created twice.
#[instrument(skip_all, fields(namespace = pool.namespace().unwrap_or_default(), pool = pool.name_any()))]
pub async fn reconcile(pool: Arc<CapsulePool>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let controller = ControllerLabels {
        controller: ControllerName::pool,
    };
    ctx.metrics.reconcile_runs.get_or_create(&controller).inc();
    let result = reconcile_inner(&pool, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&controller)
        .observe(
            started.elapsed().as_secs_f64(),
            crate::telemetry::current_trace_id().map(|trace_id| TraceLabels { trace_id }),
            None,
        );
    if let Ok(key) = key_of(&pool) {
        ctx.with_pool(&key, PoolCounters::default, |s| {
            s.failures = if result.is_ok() { 0 } else { s.failures + 1 };
        });
    }
    result
}

async fn reconcile_inner(pool: &CapsulePool, ctx: &Context) -> Result<Action> {
    let key = key_of(pool)?;
    let metric_labels = labels_of(&key);
    if pool.metadata.deletion_timestamp.is_some() {
        // Pods and the token Secret go with the pool through their owner references.
        ctx.forget_pool(&key);
        ctx.metrics.forget_pool(&metric_labels);
        return Ok(Action::await_change());
    }
    let (ns, name) = (&key.0, &key.1);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let pools: Api<CapsulePool> = Api::namespaced(ctx.client.clone(), ns);
    let reference = pool.object_ref(&());
    let problems = spec_check::problems(&pool.spec);

    let seed = || {
        pool.status
            .as_ref()
            .and_then(|s| s.pool.clone())
            .unwrap_or_default()
    };
    ctx.with_pool(&key, seed, |_| ());

    if problems.is_empty() {
        token::ensure(&secrets, pool).await?;
    }

    let listed = pods_api
        .list(&ListParams::default().labels(&labels::pool_selector(name)))
        .await?
        .items;
    let uid = pool.uid().unwrap_or_default();
    let mut pods = Vec::with_capacity(listed.len());
    for pod in listed {
        match worker_pod::controller_uid(&pod) {
            Some(owner) if owner == uid => pods.push(pod),
            // An older pool of the same name owns it; the garbage collector removes it.
            Some(_) => {}
            None => pods.push(adopt(&pods_api, pool, pod).await?),
        }
    }

    let workers = plan::classify_all(pool, &pods);
    let plan = if problems.is_empty() {
        plan::plan(pool, &workers)
    } else {
        plan::Plan::default()
    };

    let mut failure = None;
    for (pod_name, reason) in &plan.delete {
        let pod_uid = pods
            .iter()
            .find(|p| &p.name_any() == pod_name)
            .and_then(|p| p.uid());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod_uid,
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods_api.delete(pod_name, &params).await {
            Ok(_) => {
                ctx.metrics.removed(&metric_labels, *reason);
                ctx.with_pool(&key, PoolCounters::default, |s| {
                    s.counters.workers_removed += 1;
                    if *reason == plan::RemovalReason::Failed {
                        s.counters.health.removals += 1;
                    }
                });
                info!(pod = %pod_name, reason = reason.as_str(), "deleted worker");
                publish(
                    ctx,
                    &reference,
                    EventType::Normal,
                    "WorkerDeleted",
                    "DeleteWorker",
                    format!("deleted worker {pod_name} ({})", reason.as_str()),
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let mut created = 0usize;
    for _ in 0..plan.create {
        match pods_api
            .create(
                &PostParams::default(),
                &worker_pod::build(pool, &ctx.config),
            )
            .await
        {
            Ok(pod) => {
                created += 1;
                publish(
                    ctx,
                    &reference,
                    EventType::Normal,
                    "WorkerCreated",
                    "CreateWorker",
                    format!("created worker {}", pod.name_any()),
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
                publish(
                    ctx,
                    &reference,
                    EventType::Warning,
                    "WorkerCreateFailed",
                    "CreateWorker",
                    message.clone(),
                )
                .await;
                failure = Some(message);
                break;
            }
        }
    }
    if created > 0 {
        ctx.metrics
            .workers_created
            .get_or_create(&metric_labels)
            .inc_by(created as u64);
        info!(count = created, "created workers");
    }

    let counters = ctx.with_pool(&key, PoolCounters::default, |s| {
        s.counters.workers_created += created as i64;
        s.counters.clone()
    });
    let observation = status::Observation {
        workers: &workers,
        plan: &plan,
        problems: &problems,
        failure: failure.clone(),
        counters,
    };
    let new_status = status::build(pool, &observation, Timestamp::now());
    publish_pool_metrics(ctx, pool, &metric_labels, &workers, &new_status);

    if pool.status.as_ref() != Some(&new_status) {
        let was_degraded = pool.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "InvalidSpec")
        });
        if !problems.is_empty() && !was_degraded {
            publish(
                ctx,
                &reference,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                problems.join("; "),
            )
            .await;
        }
        let patch = json!({
            "apiVersion": "capsule.dev/v1alpha1",
            "kind": "CapsulePool",
            "status": new_status,
        });
        pools
            .patch_status(
                name,
                &PatchParams::apply(labels::FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        ctx.metrics
            .status_writes
            .get_or_create(&metric_labels)
            .inc();
    }

    if let Some(message) = failure {
        return Err(Error::Config(message));
    }
    if !problems.is_empty() {
        // Nothing to retry until the user changes the spec; the watch brings that change.
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(RESYNC))
}

/// Takes ownership of a pod that carries the pool's label but no controller (for example one whose
/// owner reference was stripped), the way a ReplicaSet adopts its pods.
async fn adopt(pods: &Api<Pod>, pool: &CapsulePool, pod: Pod) -> Result<Pod> {
    let owner: OwnerReference = pool
        .controller_owner_ref(&())
        .expect("a stored pool has a uid");
    let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
    owners.push(owner);
    let patch = json!({"metadata": {"ownerReferences": owners, "uid": pod.uid()}});
    info!(pod = %pod.name_any(), "adopting orphaned worker");
    Ok(pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

fn publish_pool_metrics(
    ctx: &Context,
    pool: &CapsulePool,
    labels: &PoolLabels,
    workers: &[plan::ClassifiedPod<'_>],
    new_status: &capsule_crds::CapsulePoolStatus,
) {
    let m = &ctx.metrics;
    m.set_phases(labels, &status::phase_counts(workers));
    m.warm_target
        .get_or_create(labels)
        .set(pool.spec.replicas as i64);
    m.max_workers
        .get_or_create(labels)
        .set(pool.spec.max_workers as i64);
    let ready = new_status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    m.pool_ready.get_or_create(labels).set(ready as i64);
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        // An event that could not be written must not fail the reconcile.
        warn!(error = %e, "publishing event failed");
    }
}

/// Retry with per-pool exponential backoff.
pub fn error_policy(pool: Arc<CapsulePool>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(ControllerName::pool, error.kind());
    let failures = key_of(&pool)
        .map(|key| ctx.with_pool(&key, PoolCounters::default, |s| s.failures))
        .unwrap_or(1);
    warn!(error = %error, failures, "pool reconcile failed");
    Action::requeue(backoff(failures.saturating_sub(1)))
}

/// Runs the pool controller until `shutdown` resolves. Marks readiness once its watches synced.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (pools, pods): (Api<CapsulePool>, Api<Pod>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let pod_watch =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let controller = Controller::new(pools, watcher::Config::default()).owns(pods, pod_watch);
    let store = controller.store();
    let health = ctx.health.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            health.set_synced(true);
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
