//! The pool's status as a pure function of what the controller saw and did in one pass.

use capsule_crds::{
    CapsulePool, CapsulePoolStatus, PoolCounters, WorkerPhase, WorkerSummary, MAX_WORKER_SUMMARIES,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::conditions::{self, DesiredCondition};
use crate::labels;

use super::plan::{ClassifiedPod, Plan};

/// Counts of workers per phase, in [`WorkerPhase::ALL`] order.
pub fn phase_counts(workers: &[ClassifiedPod<'_>]) -> Vec<(WorkerPhase, i64)> {
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
pub struct Observation<'a> {
    pub workers: &'a [ClassifiedPod<'a>],
    pub plan: &'a Plan,
    /// Problems of the spec (see `spec_check`); non-empty means Degraded and no changes.
    pub problems: &'a [String],
    /// A failure of this pass worth surfacing (for example a pod the API server refused).
    pub failure: Option<String>,
    pub counters: PoolCounters,
}

/// Builds the status; conditions keep their transition times from the pool's current status.
pub fn build(pool: &CapsulePool, seen: &Observation<'_>, now: Timestamp) -> CapsulePoolStatus {
    let counts = phase_counts(seen.workers);
    let idle = count(&counts, WorkerPhase::Idle);
    let starting = count(&counts, WorkerPhase::Starting);
    let warming = count(&counts, WorkerPhase::Warming);
    let bound = count(&counts, WorkerPhase::Bound);
    let unhealthy = count(&counts, WorkerPhase::Unhealthy);
    let target = pool.spec.replicas;

    let desired = if !seen.problems.is_empty() {
        let message = seen.problems.join("; ");
        vec![
            DesiredCondition::new("Ready", false, "InvalidSpec", message.clone()),
            DesiredCondition::new(
                "Progressing",
                false,
                "InvalidSpec",
                "waiting for the spec to be fixed",
            ),
            DesiredCondition::new("Degraded", true, "InvalidSpec", message),
        ]
    } else {
        let ready = if idle >= target {
            DesiredCondition::new(
                "Ready",
                true,
                "WarmTargetMet",
                format!("{idle} of {target} warm workers idle"),
            )
        } else if seen.plan.blocked_by_max > 0 {
            DesiredCondition::new(
                "Ready",
                false,
                "PoolExhausted",
                format!(
                    "{idle} of {target} warm workers idle and maxWorkers ({}) reached with {bound} bound: raise spec.maxWorkers or release sessions",
                    pool.spec.max_workers
                ),
            )
        } else {
            DesiredCondition::new(
                "Ready",
                false,
                "WarmingUp",
                format!(
                    "{idle} of {target} warm workers idle, {starting} starting, {warming} warming"
                ),
            )
        };
        let progressing = if seen.plan.create > 0 || !seen.plan.delete.is_empty() {
            DesiredCondition::new(
                "Progressing",
                true,
                "Scaling",
                format!(
                    "creating {} and deleting {} workers",
                    seen.plan.create,
                    seen.plan.delete.len()
                ),
            )
        } else if starting + warming > 0 {
            DesiredCondition::new(
                "Progressing",
                true,
                "WarmingUp",
                format!("{starting} starting, {warming} warming"),
            )
        } else {
            DesiredCondition::new("Progressing", false, "Stable", "workers match the spec")
        };
        let degraded = if let Some(failure) = &seen.failure {
            DesiredCondition::new("Degraded", true, "ReconcileFailed", failure.clone())
        } else if unhealthy > 0 {
            DesiredCondition::new(
                "Degraded",
                true,
                "WorkersUnhealthy",
                format!("{unhealthy} workers failed and are being replaced"),
            )
        } else {
            DesiredCondition::new("Degraded", false, "AsExpected", "no problems found")
        };
        vec![ready, progressing, degraded]
    };

    let existing = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = pool.metadata.generation;

    let mut summaries: Vec<WorkerSummary> = seen
        .workers
        .iter()
        .map(|w| WorkerSummary {
            pod: w.pod.name_any(),
            phase: w.phase,
            session: w.pod.labels().get(labels::SESSION).cloned(),
            last_heartbeat: None,
            rss_bytes: 0,
            cpu_percent: 0.0,
            namespace_size: 0,
            executions: 0,
        })
        .collect();
    summaries.sort_by(|a, b| a.pod.cmp(&b.pod));
    summaries.truncate(MAX_WORKER_SUMMARIES);

    let previous = pool.status.clone().unwrap_or_default();
    CapsulePoolStatus {
        observed_generation: generation,
        conditions: conditions::merge(existing, &desired, generation, now),
        selector: Some(labels::pool_selector(&pool.name_any())),
        workers: seen.workers.len() as i32,
        starting,
        warming,
        idle,
        bound,
        unhealthy,
        terminating: count(&counts, WorkerPhase::Terminating),
        worker_summaries: summaries,
        executions: previous.executions,
        executor: previous.executor,
        bridge: previous.bridge,
        pool: Some(seen.counters.clone()),
    }
}
