//! The pool's status as a pure function of what the controller saw and did in one pass.

use capsule_crds::{
    CapsulePool, CapsulePoolStatus, PoolCounters, WorkerPhase, WorkerSummary, MAX_WORKER_SUMMARIES,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use std::collections::BTreeMap;

use capsule_crds::{
    BridgeTotals, CancelTotals, CheckpointTotals, ExecutionTotals, ExecutorTotals, ModeTotals,
    TraceTotals, MAX_PYTHON_VERSIONS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{self, DesiredCondition};
use crate::labels;
use crate::relay::index::{PoolTotals, WorkerRecord};

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
    /// Set while the warm-up code keeps raising: what happened and what the operator does.
    pub warmup_failing: Option<String>,
    pub counters: PoolCounters,
    /// The relay's totals for the pool.
    pub totals: &'a PoolTotals,
    /// The relay's record of each worker that has sent a heartbeat, by pod name.
    pub records: &'a BTreeMap<String, WorkerRecord>,
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
        let ready = if let (true, Some(message)) = (idle < target, &seen.warmup_failing) {
            DesiredCondition::new("Ready", false, "WarmupFailing", message.clone())
        } else if idle >= target {
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
            if seen.plan.held_surplus > 0 {
                DesiredCondition::new(
                    "Progressing",
                    false,
                    "Stable",
                    format!(
                        "workers match the spec; {} surplus unbound workers kept for spec.scaleDownDelaySeconds ({}s)",
                        seen.plan.held_surplus, pool.spec.scale_down_delay_seconds
                    ),
                )
            } else {
                DesiredCondition::new("Progressing", false, "Stable", "workers match the spec")
            }
        };
        let degraded = if let Some(failure) = &seen.failure {
            DesiredCondition::new("Degraded", true, "ReconcileFailed", failure.clone())
        } else if let Some(message) = &seen.warmup_failing {
            DesiredCondition::new("Degraded", true, "WarmupFailing", message.clone())
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
        .map(|w| {
            let name = w.pod.name_any();
            let record = seen.records.get(&name);
            WorkerSummary {
                session: w.pod.labels().get(labels::SESSION).cloned(),
                phase: w.phase,
                last_heartbeat: record.map(|r| Time(r.last_seen_at)),
                rss_bytes: record.map_or(0, |r| r.rss_bytes as i64),
                cpu_percent: record.map_or(0.0, |r| (r.cpu_percent * 10.0).round() / 10.0),
                namespace_size: record.map_or(0, |r| r.namespace_size as i64),
                executions: record.map_or(0, |r| r.totals().executions() as i64),
                pod: name,
            }
        })
        .collect();
    // The busiest first, so the rows that matter survive the bound.
    summaries.sort_by(|a, b| {
        b.executions
            .cmp(&a.executions)
            .then_with(|| a.pod.cmp(&b.pod))
    });
    summaries.truncate(MAX_WORKER_SUMMARIES);

    let c = &seen.totals.counters;
    CapsulePoolStatus {
        observed_generation: generation,
        conditions: conditions::merge(existing, &desired, generation, now),
        selector: Some(labels::unbound_selector(&pool.name_any())),
        unbound: starting + warming + idle,
        workers: seen.workers.len() as i32,
        starting,
        warming,
        idle,
        bound,
        unhealthy,
        terminating: count(&counts, WorkerPhase::Terminating),
        worker_summaries: summaries,
        executions: Some(ExecutionTotals {
            ok: c.exec_ok as i64,
            error: c.exec_error as i64,
            cancelled: c.exec_cancelled as i64,
            timed_out: c.exec_timed_out as i64,
            rolled_back: c.transactions_rolled_back as i64,
        }),
        executor: Some(ExecutorTotals {
            outputs_enqueued: c.outputs_enqueued as i64,
            outputs_sent: c.outputs_sent as i64,
            outputs_dropped: c.outputs_dropped as i64,
            max_queue_depth: seen.totals.max_queue_depth as i64,
            drain_timeouts: c.drain_timeouts as i64,
            interpreter_restarts: c.interpreter_restarts as i64,
        }),
        bridge: Some(BridgeTotals {
            pending: seen.totals.pending_promises as i64,
            high_water: seen.totals.promise_high_water as i64,
            created: c.promises_created as i64,
            resolved: c.promises_resolved as i64,
            rejected: c.promises_rejected as i64,
            timeouts: c.promises_timed_out as i64,
            cancellations: c.promises_cancelled as i64,
        }),
        cancels: Some(CancelTotals {
            requested: c.cancels_requested as i64,
            effective: c.cancels_effective as i64,
            noop: c.cancels_noop as i64,
            interrupted: c.cancels_interrupted as i64,
            killed: c.cancels_killed as i64,
        }),
        modes: Some(ModeTotals {
            plain: c.mode_plain as i64,
            top_level_await: c.mode_top_level_await as i64,
            async_def: c.mode_async_def as i64,
            blocking_call_warnings: c.blocking_call_warnings as i64,
        }),
        trace: Some(TraceTotals {
            sent: c.trace_sent as i64,
            dropped: c.trace_dropped as i64,
        }),
        checkpoints: Some(CheckpointTotals {
            created: c.checkpoints_created as i64,
            restored: c.checkpoints_restored as i64,
            failed: c.checkpoint_failures as i64,
        }),
        python_versions: python_versions(seen.records),
        pool: Some(seen.counters.clone()),
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
pub fn significant_change(old: Option<&CapsulePoolStatus>, new: &CapsulePoolStatus) -> bool {
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
