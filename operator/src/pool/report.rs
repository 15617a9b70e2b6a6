//! The report step: the pool's counters, its status (written when due), its Prometheus series.

use std::time::Duration;

use capsule_crds::{CapsulePoolStatus, WorkerPhase};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::apply::Applied;
use super::counters::count_pass;
use super::observe::Seen;
use super::plan::Plan;
use super::restored_totals::RestoredTotals;
use super::warmup_failing::WarmupFailing;
use super::{status, status_write, Pass};
use crate::error::Result;
use crate::relay::index::PoolTotals;

/// Reports the pass; returns how long a changed status still waits to be written.
pub(super) async fn report(
    pass: &Pass<'_>,
    seen: &Seen<'_>,
    plan: &Plan,
    applied: &Applied,
) -> Result<Option<Duration>> {
    let totals = relayed_totals(pass, seen);
    let counters = count_pass(pass, seen, applied.created, &totals);
    let warmup_failing = pass.with_state(|s| s.warmup_failing.as_ref().map(WarmupFailing::message));
    let observation = status::Observation {
        workers: &seen.workers,
        plan,
        problems: &pass.problems,
        failure: applied.failure.clone(),
        warmup_failing,
        counters,
        totals: &totals,
        records: &seen.records,
    };
    let new_status = status::build(pass.pool, &observation, Timestamp::now());
    publish_pool_metrics(pass, seen, &new_status);
    let per_worker = pass.pool.spec.metrics.per_worker;
    pass.ctx
        .index
        .publish(pass.namespace(), pass.name(), &totals, per_worker);
    status_write::write_when_due(pass, &new_status, seen.now).await
}

/// The relay's totals for the pool, or those restored from its status until every running worker
/// has reported to this process.
fn relayed_totals(pass: &Pass<'_>, seen: &Seen<'_>) -> PoolTotals {
    // Every running worker has reported to this process, or has had a staleness period to.
    let all_reported = seen
        .workers
        .iter()
        .filter(|w| {
            matches!(
                w.phase,
                WorkerPhase::Warming | WorkerPhase::Idle | WorkerPhase::Bound
            )
        })
        .all(|w| seen.records.contains_key(&w.pod.name_any()))
        || pass.ctx.started.elapsed().as_secs()
            > pass.pool.spec.heartbeat.staleness_seconds.max(0) as u64;
    let relayed = pass.ctx.index.pool_totals(pass.namespace(), pass.name());
    pass.with_state(|s| {
        if s.restored_totals == RestoredTotals::Unseen {
            s.restored_totals =
                RestoredTotals::Pending(status::totals_from_status(pass.pool.status.as_ref()));
        }
        s.restored_totals.apply(&relayed, all_reported)
    })
}

/// The pool's phase counts, its spec's targets and whether it is Ready.
fn publish_pool_metrics(pass: &Pass<'_>, seen: &Seen<'_>, new_status: &CapsulePoolStatus) {
    let (m, labels, spec) = (&pass.ctx.metrics, &pass.labels, &pass.pool.spec);
    m.set_phases(labels, &status::phase_counts(&seen.workers));
    m.warm_target
        .get_or_create(labels)
        .set(spec.replicas as i64);
    m.max_workers
        .get_or_create(labels)
        .set(spec.max_workers as i64);
    let ready = new_status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    m.pool_ready.get_or_create(labels).set(ready as i64);
}
