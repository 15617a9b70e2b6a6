//! The pool's status as a pure function of what the controller saw and did in one pass.

mod desired_conditions;
mod relayed_totals;
mod summaries;

pub(super) use relayed_totals::totals_from_status;

use std::collections::BTreeMap;

use capsule_crds::{
    CapsulePool, CapsulePoolStatus, PoolCounters, WorkerPhase, MAX_PYTHON_VERSIONS,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::conditions;
use crate::labels;
use crate::relay::index::{PoolTotals, WorkerRecord};

use super::plan::{ClassifiedPod, Plan};

/// Counts of workers per phase, in [`WorkerPhase::ALL`] order.
pub(super) fn phase_counts(workers: &[ClassifiedPod<'_>]) -> Vec<(WorkerPhase, i64)> {
    WorkerPhase::ALL
        .iter()
        .map(|phase| {
            (
                *phase,
                workers.iter().filter(|w| w.phase == *phase).count() as i64,
            )
        })
        .collect()
}

fn count(counts: &[(WorkerPhase, i64)], phase: WorkerPhase) -> i32 {
    counts
        .iter()
        .find(|(p, _)| *p == phase)
        .map(|(_, n)| *n as i32)
        .unwrap_or(0)
}

/// What one pass found and did, as the status builder needs it.
pub(super) struct Observation<'a> {
    pub workers: &'a [ClassifiedPod<'a>],
    pub plan: &'a Plan,
    /// Problems of the spec (see `spec_check`); non-empty means Degraded and no changes.
    pub problems: &'a [String],
    /// A failure of this pass worth surfacing (for example a pod the API server refused).
    pub failure: Option<String>,
    /// Set while the warm-up code keeps raising: what happened and what the operator does.
    pub warmup_failing: Option<String>,
    pub counters: PoolCounters,
    /// The relay's totals for the pool.
    pub totals: &'a PoolTotals,
    /// The relay's record of each worker that has sent a heartbeat, by pod name.
    pub records: &'a BTreeMap<String, WorkerRecord>,
}

/// How many workers are in each phase, as status reports them.
#[derive(Clone, Copy)]
struct PhaseTally {
    starting: i32,
    warming: i32,
    idle: i32,
    bound: i32,
    unhealthy: i32,
    terminating: i32,
}

impl PhaseTally {
    fn of(workers: &[ClassifiedPod<'_>]) -> Self {
        let counts = phase_counts(workers);
        Self {
            starting: count(&counts, WorkerPhase::Starting),
            warming: count(&counts, WorkerPhase::Warming),
            idle: count(&counts, WorkerPhase::Idle),
            bound: count(&counts, WorkerPhase::Bound),
            unhealthy: count(&counts, WorkerPhase::Unhealthy),
            terminating: count(&counts, WorkerPhase::Terminating),
        }
    }
}

/// Builds the status; conditions keep their transition times from the pool's current status.
pub(super) fn build(
    pool: &CapsulePool,
    seen: &Observation<'_>,
    now: Timestamp,
) -> CapsulePoolStatus {
    let tally = PhaseTally::of(seen.workers);
    let desired = desired_conditions::desired(pool, seen, &tally);
    let existing = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = pool.metadata.generation;
    CapsulePoolStatus {
        observed_generation: generation,
        conditions: conditions::merge(existing, &desired, generation, now),
        selector: Some(labels::unbound_selector(&pool.name_any())),
        unbound: tally.starting + tally.warming + tally.idle,
        workers: seen.workers.len() as i32,
        starting: tally.starting,
        warming: tally.warming,
        idle: tally.idle,
        bound: tally.bound,
        unhealthy: tally.unhealthy,
        terminating: tally.terminating,
        worker_summaries: summaries::worker_summaries(seen),
        python_versions: python_versions(seen.records),
        pool: Some(seen.counters.clone()),
        ..relayed_totals::relayed_totals(seen.totals)
    }
}

/// The distinct Python versions of the pool's workers, sorted, at most [`MAX_PYTHON_VERSIONS`].
fn python_versions(records: &BTreeMap<String, WorkerRecord>) -> Vec<String> {
    let versions: std::collections::BTreeSet<&String> = records
        .values()
        .filter_map(|r| r.python_version.as_ref())
        .collect();
    versions
        .into_iter()
        .take(MAX_PYTHON_VERSIONS)
        .cloned()
        .collect()
}

/// Whether `new` differs from `old` in what a user acts on (counts by phase, conditions, generation),
/// as opposed to relayed figures (memory, CPU, counters, last heartbeats) that move with every
/// heartbeat and are written at most once per status interval.
pub(super) fn significant_change(old: Option<&CapsulePoolStatus>, new: &CapsulePoolStatus) -> bool {
    let Some(old) = old else { return true };
    old.observed_generation != new.observed_generation
        || old.conditions != new.conditions
        || old.selector != new.selector
        || (
            old.workers,
            old.starting,
            old.warming,
            old.idle,
            old.bound,
            old.unhealthy,
            old.terminating,
        ) != (
            new.workers,
            new.starting,
            new.warming,
            new.idle,
            new.bound,
            new.unhealthy,
            new.terminating,
        )
}
