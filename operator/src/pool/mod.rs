//! The CapsulePool controller: keeps each pool's warm workers at its target and reports status.

pub mod checkpoint_store;
pub mod network_policy;
pub mod new_worker;
pub mod plan;
pub mod pod_security;
pub mod restored_totals;
pub mod scale_down;
pub mod spec_check;
pub mod status;
pub mod token;
pub mod warmup_failing;
pub mod worker_pod;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, CapsuleSession, PoolCounters, SessionPhase, WorkerPhase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::context::{Context, PoolKey};
use crate::error::{backoff, Error, Result};
use crate::labels;
use crate::metrics::{
    raise_each, raise_to, raise_to_f64, ControllerName, PoolLabels, WorkerLabels, CANCEL_KINDS,
    CHECKPOINT_RESULTS, EXECUTION_MODES, EXECUTION_OUTCOMES, OUTPUT_RESULTS, PROMISE_EVENTS,
    TRACE_RESULTS,
};
use crate::reconcile_timer::ReconcileTimer;
use crate::relay::index::{PoolTotals, WorkerRecord};
use crate::watch_cache::{reflect, Listing};
use restored_totals::RestoredTotals;
use warmup_failing::WarmupFailing;

/// The longest a pool pass waits for the session cache's first list before planning without it.
const SESSION_CACHE_WAIT: Duration = Duration::from_secs(10);

/// Session changes the pool controller has not taken yet; a full buffer pauses the session watch.
const SESSION_TRIGGER_BUFFER: usize = 256;

/// The shortest time between two status writes of one pool, even for a change of phase counts.
const SIGNIFICANT_WRITE_GAP: Duration = Duration::from_secs(1);

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
#[instrument(skip_all, fields(namespace = pool.namespace().unwrap_or_default(), pool = pool.name_any(), trace_id = tracing::field::Empty))]
pub async fn reconcile(pool: Arc<CapsulePool>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ReconcileTimer::start(&ctx.metrics, ControllerName::pool);
    let result = reconcile_inner(&pool, &ctx).await;
    drop(timer);
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
        forget(ctx, &key);
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

    // Until the session cache has listed once (just after a start or a takeover) the pool cannot
    // tell sessions waiting for a worker from none, and would remove the workers started for them.
    // Waited for before the pods are listed, so the plan works on a fresh list.
    if let Some(sessions) = ctx.sessions.get() {
        match sessions.wait_listed(SESSION_CACHE_WAIT).await {
            Listing::Listed => {}
            Listing::TimedOut => {
                warn!("session cache not listed yet: planning without waiting sessions")
            }
            // Shutting down: a plan without the waiting sessions could remove their workers.
            Listing::WatchEnded => return Ok(Action::await_change()),
        }
    }

    let pool_key = if problems.is_empty() {
        Some(token::ensure(&secrets, pool).await?)
    } else {
        None
    };
    if problems.is_empty() {
        network_policy::ensure(&Api::namespaced(ctx.client.clone(), ns), pool, &ctx.config).await?;
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

    let now = Instant::now();
    // One read of the index per worker serves both the health signals and the status.
    let records: std::collections::BTreeMap<String, WorkerRecord> = pods
        .iter()
        .filter_map(|p| ctx.index.get(ns, &p.name_any()).map(|r| (p.name_any(), r)))
        .collect();
    let signals = |pod: &Pod| worker_signals(ctx, pool, pod, records.get(&pod.name_any()), now);
    let workers = plan::classify_all(pool, &pods, &signals);
    let live: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    ctx.index.retire_missing(ns, name, &live);
    let waiting = waiting_sessions(ctx, ns, name);
    let mut plan = if problems.is_empty() {
        plan::plan(pool, &workers, waiting)
    } else {
        plan::Plan::default()
    };
    let scale_down_delay = Duration::from_secs(pool.spec.scale_down_delay_seconds.max(0) as u64);
    let surplus_kept_for = ctx.with_pool(&key, PoolCounters::default, |s| {
        s.surplus_hold.apply(
            &mut plan,
            scale_down::Target::of(&pool.spec),
            scale_down_delay,
            now,
        )
    });
    for orphan in orphaned_bindings(ctx, ns, &workers).await? {
        if !plan.delete.iter().any(|(pod, _)| *pod == orphan) {
            plan.delete.push((orphan, plan::RemovalReason::Released));
        }
    }
    record_health(ctx, &key, &metric_labels, &workers);

    let mut failure = None;
    for (pod_name, reason) in &plan.delete {
        let listed_pod = pods.iter().find(|p| &p.name_any() == pod_name);
        // The resourceVersion makes the delete a compare-and-swap against the session controller:
        // a worker bound since the list (its label patch changed the version) is not deleted.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: listed_pod.and_then(|p| p.uid()),
                resource_version: listed_pod.and_then(|p| p.metadata.resource_version.clone()),
            }),
            ..Default::default()
        };
        match pods_api.delete(pod_name, &params).await {
            Ok(_) => {
                ctx.metrics.removed(&metric_labels, *reason);
                ctx.with_pool(&key, PoolCounters::default, |s| {
                    s.counters.workers_removed += 1;
                    match reason {
                        plan::RemovalReason::Failed
                        | plan::RemovalReason::Stale
                        | plan::RemovalReason::WarmupTimeout
                        | plan::RemovalReason::WarmupFailed => s.counters.health.removals += 1,
                        plan::RemovalReason::Recycled => s.counters.workers_recycled += 1,
                        _ => {}
                    }
                });
                info!(pod = %pod_name, reason = reason.as_str(), "deleted worker");
                let (event_type, event_reason, message) = match reason {
                    plan::RemovalReason::WarmupFailed => {
                        let error = warmup_error(records.get(pod_name));
                        ctx.with_pool(&key, PoolCounters::default, |s| {
                            WarmupFailing::record(&mut s.warmup_failing, error.clone(), now)
                        });
                        let message =
                            format!("deleted worker {pod_name}: spec.warmup.code raised {error}");
                        (EventType::Warning, "WarmupFailed", message)
                    }
                    _ => (
                        EventType::Normal,
                        "WorkerDeleted",
                        format!("deleted worker {pod_name} ({})", reason.as_str()),
                    ),
                };
                publish(
                    ctx,
                    &reference,
                    event_type,
                    event_reason,
                    "DeleteWorker",
                    message,
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // After the deletes, which may have just found the warm-up failing.
    let creates_held_for = ctx.with_pool(&key, PoolCounters::default, |s| {
        hold_creates_while_warmup_fails(&mut s.warmup_failing, &workers, &mut plan, now)
    });
    let mut created = 0usize;
    // No plan creates workers without a key: an unusable spec plans nothing.
    let pool_key = pool_key.unwrap_or_default();
    for _ in 0..plan.create {
        match new_worker::create(&pods_api, &secrets, pool, &pool_key, &ctx.config).await {
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

    // Every running worker has reported to this process, or has had a staleness period to.
    let all_reported = workers
        .iter()
        .filter(|w| {
            matches!(
                w.phase,
                WorkerPhase::Warming | WorkerPhase::Idle | WorkerPhase::Bound
            )
        })
        .all(|w| records.contains_key(&w.pod.name_any()))
        || ctx.started.elapsed().as_secs() > pool.spec.heartbeat.staleness_seconds.max(0) as u64;
    let relayed = ctx.index.pool_totals(ns, name);
    let totals = ctx.with_pool(&key, PoolCounters::default, |s| {
        if s.restored_totals == RestoredTotals::Unseen {
            s.restored_totals =
                RestoredTotals::Pending(restored_totals::from_status(pool.status.as_ref()));
        }
        s.restored_totals.apply(&relayed, all_reported)
    });
    let idle_now = workers
        .iter()
        .filter(|w| w.phase == WorkerPhase::Idle)
        .count();
    let below_target = problems.is_empty() && idle_now < pool.spec.replicas.max(0) as usize;
    let counters = ctx.with_pool(&key, PoolCounters::default, |s| {
        s.counters.workers_created += created as i64;
        if below_target && !s.below_target {
            s.counters.warmup.triggers += 1;
            ctx.metrics
                .warmup_triggers
                .get_or_create(&metric_labels)
                .inc();
        }
        if below_target {
            s.counters.warmup.workers_created += created as i64;
        }
        s.below_target = below_target;
        let new_restarts = totals.process_restarts.saturating_sub(s.restarts_seen);
        s.counters.workers_restarted += new_restarts as i64;
        s.restarts_seen = totals.process_restarts;
        let (hits, misses) = (s.counters.hits, s.counters.misses);
        s.counters.hit_rate_percent = (hits + misses > 0)
            .then(|| format!("{:.1}", 100.0 * hits as f64 / (hits + misses) as f64));
        s.counters.clone()
    });
    let warmup_failing = ctx.with_pool(&key, PoolCounters::default, |s| {
        s.warmup_failing.as_ref().map(WarmupFailing::message)
    });
    let observation = status::Observation {
        workers: &workers,
        plan: &plan,
        problems: &problems,
        failure: failure.clone(),
        warmup_failing,
        counters,
        totals: &totals,
        records: &records,
    };
    let new_status = status::build(pool, &observation, Timestamp::now());
    publish_pool_metrics(ctx, pool, &metric_labels, &workers, &new_status);
    publish_relay_metrics(ctx, pool, &key, &metric_labels, &totals, &records, now);

    let changed = pool.status.as_ref() != Some(&new_status);
    let significant = changed && status::significant_change(pool.status.as_ref(), &new_status);
    let interval = ctx.config.status_interval;
    // A change of phase counts or conditions goes out soon, a change only in relayed figures once
    // per status interval; under churn (binds, releases, refills) both are coalesced, so one pool
    // never writes more than once per SIGNIFICANT_WRITE_GAP.
    let wait_before_write = ctx.with_pool(&key, PoolCounters::default, |s| {
        let gap = if significant {
            SIGNIFICANT_WRITE_GAP.min(interval)
        } else {
            interval
        };
        let since_last = match s.last_status_write {
            Some(last) => now.saturating_duration_since(last),
            None if significant => gap,
            None => {
                s.last_status_write = Some(now);
                Duration::ZERO
            }
        };
        gap.saturating_sub(since_last)
    });
    let write_now = changed && wait_before_write.is_zero();
    let write_later = changed && !write_now;
    if write_now {
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
            "metadata": {"name": name},
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
        ctx.with_pool(&key, PoolCounters::default, |s| {
            s.last_status_write = Some(Instant::now())
        });
    }

    if let Some(message) = failure {
        return Err(Error::Config(message));
    }
    let mut next_pass = interval;
    if write_later {
        next_pass = next_pass.min(wait_before_write);
    }
    if let Some(kept_for) = surplus_kept_for {
        next_pass = next_pass.min(kept_for);
    }
    if let Some(held_for) = creates_held_for {
        next_pass = next_pass.min(held_for);
    }
    if !problems.is_empty() && !write_later {
        // Nothing to retry until the user changes the spec; the watch brings that change.
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(next_pass))
}

/// While the warm-up code keeps raising, new workers wait out the backoff; a worker of the current
/// template that warmed up ends it. Returns how long creations are held.
fn hold_creates_while_warmup_fails(
    state: &mut Option<WarmupFailing>,
    workers: &[plan::ClassifiedPod<'_>],
    plan: &mut plan::Plan,
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

/// `ExceptionType: message` of a worker's warm-up failure, as its last heartbeat gave it.
fn warmup_error(record: Option<&WorkerRecord>) -> String {
    match record.and_then(|r| r.warmup_failure.as_ref()) {
        Some(failure) => format!("{}: {}", failure.ename, failure.evalue),
        None => "an exception".into(),
    }
}

/// Whether a worker's heartbeat is stale and whether it is worn out, from the relay's index.
fn worker_signals(
    ctx: &Context,
    pool: &CapsulePool,
    pod: &Pod,
    record: Option<&WorkerRecord>,
    now: Instant,
) -> plan::WorkerSignals {
    let spec = &pool.spec;
    let staleness = Duration::from_secs(spec.heartbeat.staleness_seconds.max(1) as u64);
    let pod_age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs())
        .unwrap_or_default();
    let stale = match record {
        Some(r) => r.lost_session || now.saturating_duration_since(r.last_seen) > staleness,
        None => {
            // Never heard from: give it the warm-up time and a staleness period, counted from
            // when this operator process started watching.
            let grace = staleness
                + Duration::from_secs(
                    spec.warmup
                        .as_ref()
                        .map_or(0, |w| w.timeout_seconds.max(0) as u64),
                );
            pod_age > grace && now.saturating_duration_since(ctx.started) > grace
        }
    };
    let rules = &spec.recycle;
    let worn_out = record.is_some_and(|r| {
        rules
            .max_executions
            .is_some_and(|max| r.totals().executions() >= max as u64)
            || rules
                .max_rss_bytes
                .is_some_and(|max| r.rss_bytes >= max as u64)
    }) || rules
        .max_age_seconds
        .is_some_and(|max| pod_age.as_secs() >= max as u64);
    // A worker whose warm-up never finishes keeps heartbeating while it warms, so staleness does
    // not catch it: the warm-up timeout counts from its worker container's start.
    let warmup_expired = spec.warmup.as_ref().is_some_and(|warmup| {
        worker_started_at(pod).is_some_and(|started| {
            Timestamp::now().duration_since(started).as_secs() > warmup.timeout_seconds.max(0)
        })
    });
    plan::WorkerSignals {
        stale,
        worn_out,
        warmup_expired,
        warmup_failed: record.is_some_and(|r| r.warmup_failure.is_some()),
    }
}

/// When the pod's worker container last started running.
fn worker_started_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == worker_pod::WORKER_CONTAINER)?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()
        .map(|t| t.0)
}

/// Bound workers whose session no longer exists (its finalizer was removed by hand, or it was
/// deleted while no operator ran): nobody will release them, and their interpreter holds another
/// client's state, so they are replaced. The session cache answers first; a session it lacks is
/// read from the API server, since the cache may not have synced yet after a restart. Without a
/// session cache (the pool controller's run never started, as in API-call tests that give none)
/// nothing is checked.
async fn orphaned_bindings(
    ctx: &Context,
    namespace: &str,
    workers: &[plan::ClassifiedPod<'_>],
) -> Result<Vec<String>> {
    // Without a session cache there is nothing to compare with.
    let Some(store) = ctx.sessions.get().map(|cache| cache.store()) else {
        return Ok(Vec::new());
    };
    let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = |session: &str| {
        store
            .state()
            .into_iter()
            .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == session)
    };
    let mut orphans = Vec::new();
    for w in workers {
        if w.phase == WorkerPhase::Terminating {
            continue;
        }
        let Some(session) = w.pod.labels().get(labels::SESSION) else {
            continue;
        };
        let pod = w.pod.name_any();
        match cached(session) {
            // A bind whose response was lost can land after its session took another worker:
            // the session's status names the worker it holds, and this one is a leftover.
            Some(s) => {
                let elsewhere = s.status.as_ref().is_some_and(|st| {
                    st.phase == SessionPhase::Bound && st.worker.as_ref().is_some_and(|w| *w != pod)
                });
                if elsewhere {
                    warn!(pod = %pod, "worker labelled for a session bound to another worker: replacing it");
                    orphans.push(pod);
                }
            }
            None => {
                if sessions.get_opt(session).await?.is_none() {
                    warn!(pod = %pod, "worker bound to a session that no longer exists: replacing it");
                    orphans.push(pod);
                }
            }
        }
    }
    Ok(orphans)
}

/// Whether a session waits for a worker that does not exist yet: its controller looked and found
/// no idle worker (a miss). A session not yet looked at is not counted, as it most likely takes a
/// warm worker; counting it would start a worker per session, only to remove it again.
pub fn waits_for_new_worker(session: &CapsuleSession) -> bool {
    session.metadata.deletion_timestamp.is_none()
        && session
            .status
            .as_ref()
            .is_some_and(|st| st.phase == SessionPhase::Pending && st.warm_hit == Some(false))
}

/// Sessions of this pool that missed; the pool grows by that many (up to maxWorkers).
fn waiting_sessions(ctx: &Context, namespace: &str, pool: &str) -> usize {
    let Some(store) = ctx.sessions.get().map(|cache| cache.store()) else {
        return 0;
    };
    store
        .state()
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace)
                && s.spec.pool == pool
                && waits_for_new_worker(s)
        })
        .count()
}

/// Counts a health pass, and each newly unhealthy worker once.
fn record_health(
    ctx: &Context,
    key: &PoolKey,
    labels: &PoolLabels,
    workers: &[plan::ClassifiedPod<'_>],
) {
    let unhealthy: std::collections::BTreeSet<String> = workers
        .iter()
        .filter(|w| w.phase == WorkerPhase::Unhealthy)
        .map(|w| w.pod.name_any())
        .collect();
    ctx.metrics.health_checks.get_or_create(labels).inc();
    ctx.with_pool(key, PoolCounters::default, |s| {
        s.counters.health.runs += 1;
        let new = unhealthy.difference(&s.unhealthy).count();
        s.counters.health.triggers += new as i64;
        if new > 0 {
            ctx.metrics
                .health_triggers
                .get_or_create(labels)
                .inc_by(new as u64);
        }
        s.unhealthy = unhealthy;
    });
}

fn publish_relay_metrics(
    ctx: &Context,
    pool: &CapsulePool,
    key: &PoolKey,
    labels: &PoolLabels,
    totals: &PoolTotals,
    records: &std::collections::BTreeMap<String, WorkerRecord>,
    now: Instant,
) {
    let m = &ctx.metrics;
    let c = &totals.counters;
    m.rss_bytes
        .get_or_create(labels)
        .set(records.values().map(|r| r.rss_bytes as i64).sum());
    m.cpu_cores
        .get_or_create(labels)
        .set(records.values().map(|r| r.cpu_percent / 100.0).sum());
    let cpu_seconds = totals.counters.cpu_millis as f64 / 1000.0;
    raise_to_f64(&m.cpu_seconds.get_or_create(labels), cpu_seconds);
    m.namespace_names
        .get_or_create(labels)
        .set(records.values().map(|r| r.namespace_size as i64).sum());
    let oldest = records
        .values()
        .map(|r| now.saturating_duration_since(r.last_seen).as_secs_f64())
        .fold(0.0, f64::max);
    m.heartbeat_age.get_or_create(labels).set(oldest);
    let (ns, name) = (labels.namespace.clone(), labels.pool.clone());
    let executions = [c.exec_ok, c.exec_error, c.exec_cancelled, c.exec_timed_out];
    raise_each(&m.executions, labels, EXECUTION_OUTCOMES, executions);
    let outputs = [c.outputs_enqueued, c.outputs_sent, c.outputs_dropped];
    raise_each(&m.outputs, labels, OUTPUT_RESULTS, outputs);
    let promises = [
        c.promises_created,
        c.promises_resolved,
        c.promises_rejected,
        c.promises_timed_out,
        c.promises_cancelled,
    ];
    raise_each(&m.promises, labels, PROMISE_EVENTS, promises);
    raise_to(&m.drain_timeouts.get_or_create(labels), c.drain_timeouts);
    raise_to(
        &m.interpreter_restarts.get_or_create(labels),
        c.interpreter_restarts,
    );
    raise_to(
        &m.blocking_call_warnings.get_or_create(labels),
        c.blocking_call_warnings,
    );
    raise_to(
        &m.transactions_rolled_back.get_or_create(labels),
        c.transactions_rolled_back,
    );
    let cancels = [
        c.cancels_requested,
        c.cancels_effective,
        c.cancels_noop,
        c.cancels_interrupted,
        c.cancels_killed,
    ];
    raise_each(&m.cancels, labels, CANCEL_KINDS, cancels);
    let traces = [c.trace_sent, c.trace_dropped];
    raise_each(&m.trace_events, labels, TRACE_RESULTS, traces);
    let checkpoints = [
        c.checkpoints_created,
        c.checkpoints_restored,
        c.checkpoint_failures,
    ];
    raise_each(&m.checkpoints, labels, CHECKPOINT_RESULTS, checkpoints);
    let modes = [c.mode_plain, c.mode_top_level_await, c.mode_async_def];
    raise_each(&m.execution_modes, labels, EXECUTION_MODES, modes);
    raise_to(
        &m.worker_restarts.get_or_create(labels),
        totals.process_restarts,
    );
    m.output_queue_max_depth
        .get_or_create(labels)
        .set(totals.max_queue_depth as i64);
    m.promises_pending
        .get_or_create(labels)
        .set(totals.pending_promises as i64);
    m.promises_high_water
        .get_or_create(labels)
        .set(totals.promise_high_water as i64);

    // Per-worker series only where the pool asks for them; removed when the worker goes.
    let wanted: std::collections::BTreeSet<String> = if pool.spec.metrics.per_worker {
        records.keys().cloned().collect()
    } else {
        Default::default()
    };
    let previous = ctx.with_pool(key, PoolCounters::default, |s| {
        std::mem::replace(&mut s.per_worker_series, wanted.clone())
    });
    for gone in previous.difference(&wanted) {
        m.forget_worker(&WorkerLabels {
            namespace: ns.clone(),
            pool: name.clone(),
            pod: gone.clone(),
        });
    }
    for pod in &wanted {
        let r = &records[pod];
        let l = WorkerLabels {
            namespace: ns.clone(),
            pool: name.clone(),
            pod: pod.clone(),
        };
        m.worker_rss_bytes.get_or_create(&l).set(r.rss_bytes as i64);
        m.worker_cpu_cores
            .get_or_create(&l)
            .set(r.cpu_percent / 100.0);
        m.worker_heartbeat_age
            .get_or_create(&l)
            .set(now.saturating_duration_since(r.last_seen).as_secs_f64());
    }
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

/// Drops everything the operator keeps about a deleted pool: its state, its index entries and every
/// Prometheus series, per-worker ones included.
fn forget(ctx: &Context, key: &PoolKey) {
    let labels = labels_of(key);
    let per_worker = ctx.with_pool(key, PoolCounters::default, |s| {
        std::mem::take(&mut s.per_worker_series)
    });
    for pod in per_worker {
        ctx.metrics.forget_worker(&WorkerLabels {
            namespace: key.0.clone(),
            pool: key.1.clone(),
            pod,
        });
    }
    ctx.forget_pool(key);
    ctx.metrics.forget_pool(&labels);
    ctx.index.forget_pool(&key.0, &key.1);
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

/// Feeds the session cache's changes to the pool controller until it stops listening. Watch
/// errors are logged here and retried with backoff, not passed on.
async fn forward_sessions(
    events: impl futures::Stream<Item = watcher::Result<CapsuleSession>> + Send + 'static,
    mut trigger: futures::channel::mpsc::Sender<CapsuleSession>,
) {
    use futures::SinkExt;
    use kube::runtime::WatchStreamExt;
    let mut events = std::pin::pin!(events.default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(session) => {
                if trigger.send(session).await.is_err() {
                    return;
                }
            }
            Err(error) => warn!(%error, "session watch failed; retrying"),
        }
    }
}

/// Runs the pool controller until `shutdown` resolves. Marks readiness once its watches synced.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    caches_synced: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (pools, pods, sessions): (Api<CapsulePool>, Api<Pod>, Api<CapsuleSession>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };
    let pod_watch =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let (pool_cache, pool_events) = reflect(watcher(pools, watcher::Config::default()));
    // The pool counts waiting sessions from the same watch that wakes it: a session that missed
    // is in the cache before its event starts the pass that creates the worker it waits for.
    let (session_cache, session_events) = reflect(watcher(sessions, watcher::Config::default()));
    let _ = ctx.sessions.set(session_cache);
    // Driven by its own task with its own backoff: an error on the pool or pod watch pauses the
    // controller's triggers, and must not pause the cache the pool counts waiting sessions from.
    let (session_tx, session_rx) = futures::channel::mpsc::channel(SESSION_TRIGGER_BUFFER);
    tokio::spawn(forward_sessions(session_events, session_tx));
    let controller = Controller::for_stream(pool_events, pool_cache.store().clone())
        .owns(pods, pod_watch)
        .watches_stream(session_rx.map(Ok), |session| {
            waits_for_new_worker(&session)
                .then(|| {
                    session.namespace().map(|ns| {
                        kube::runtime::reflector::ObjectRef::new(&session.spec.pool).within(&ns)
                    })
                })
                .flatten()
        });
    let health = ctx.health.clone();
    tokio::spawn(async move {
        caches_synced.await;
        tracing::debug!("secret and pod caches synced");
        if pool_cache.listed().await {
            tracing::info!("watches synced: ready");
            health.set_synced(true);
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                // kube-runtime does not reconcile an object gone from its cache: a deleted pool
                // surfaces here, and its in-memory state and series go with it.
                Err(kube::runtime::controller::Error::ObjectNotFound(gone)) => {
                    if let Some(ns) = gone.namespace.clone() {
                        forget(&ctx, &(ns, gone.name.clone()));
                    }
                }
                Err(error) => warn!(%error, "pool controller stream error"),
                Ok(_) => {}
            }
            futures::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::waits_for_new_worker;
    use capsule_crds::CapsuleSession;
    use serde_json::json;

    fn session(status: serde_json::Value, deleting: bool) -> CapsuleSession {
        let mut metadata = json!({"name": "s", "namespace": "default"});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-11-28T00:00:00Z");
        }
        serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
            "metadata": metadata, "spec": {"pool": "p"}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_session_that_missed_makes_its_pool_grow() {
        let missed = json!({"phase": "Pending", "warmHit": false});
        assert!(waits_for_new_worker(&session(missed.clone(), false)));
        assert!(
            !waits_for_new_worker(&session(missed, true)),
            "being deleted"
        );
        assert!(
            !waits_for_new_worker(&session(serde_json::Value::Null, false)),
            "not looked at yet: it most likely takes a warm worker"
        );
        assert!(!waits_for_new_worker(&session(
            json!({"phase": "Pending"}),
            false
        )));
        assert!(!waits_for_new_worker(&session(
            json!({"phase": "Bound", "warmHit": false}),
            false
        )));
    }
}
