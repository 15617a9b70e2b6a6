//! The pool controller's decisions, as a pure function of the pool and its pods: which phase each
//! worker is in, which pods to delete and how many to create. Tested without any API server.

use capsule_crds::{CapsulePool, WorkerPhase};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::labels;

use super::worker_pod;

/// Why a pod is deleted; a bounded label value for metrics and the reason of its Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RemovalReason {
    /// Its containers failed or it ended (phase Failed or Succeeded).
    Failed,
    /// More unbound workers than the warm target.
    ScaleDown,
    /// Built from an older template and not bound.
    Outdated,
    /// No heartbeat within the pool's staleness bound.
    Stale,
    /// Past a recycle rule (executions, RSS or age) and idle.
    Recycled,
    /// Its session was released and the pool replaces released workers, or its session is gone.
    Released,
    /// Not ready within `spec.warmup.timeoutSeconds` of its worker container starting.
    WarmupTimeout,
    /// Its heartbeat says the pool's warm-up code raised.
    WarmupFailed,
}

impl RemovalReason {
    pub const ALL: [RemovalReason; 8] = [
        Self::Failed,
        Self::ScaleDown,
        Self::Outdated,
        Self::Stale,
        Self::Recycled,
        Self::Released,
        Self::WarmupTimeout,
        Self::WarmupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::ScaleDown => "scale_down",
            Self::Outdated => "outdated",
            Self::Stale => "stale",
            Self::Recycled => "recycled",
            Self::Released => "released",
            Self::WarmupTimeout => "warmup_timeout",
            Self::WarmupFailed => "warmup_failed",
        }
    }
}

/// One worker pod and the phase the operator puts it in.
#[derive(Clone, Debug)]
pub struct ClassifiedPod<'a> {
    pub pod: &'a Pod,
    pub phase: WorkerPhase,
    pub current: bool,
    /// Unhealthy because its heartbeat is stale (as opposed to a failed pod).
    pub stale: bool,
    /// Unhealthy because it did not become ready within the warm-up timeout.
    pub warmup_expired: bool,
    /// Unhealthy because the warm-up code raised in it.
    pub warmup_failed: bool,
    /// Idle and past a recycle rule.
    pub worn_out: bool,
}

/// What the relay knows of a worker beyond its pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSignals {
    /// No heartbeat within the staleness bound.
    pub stale: bool,
    /// Past a recycle rule.
    pub worn_out: bool,
    /// Still not ready `spec.warmup.timeoutSeconds` after its worker container started.
    pub warmup_expired: bool,
    /// Its heartbeat reports that the warm-up code raised.
    pub warmup_failed: bool,
}

/// Everything the pool controller does in one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub delete: Vec<(String, RemovalReason)>,
    pub create: usize,
    /// Workers the pool would need but `maxWorkers` forbids.
    pub blocked_by_max: usize,
    /// Surplus unbound workers kept for `spec.scaleDownDelaySeconds` (see `scale_down`).
    pub held_surplus: usize,
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        .unwrap_or(false)
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn any_container_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .any(|c| c.state.as_ref().and_then(|s| s.running.as_ref()).is_some())
        })
        .unwrap_or(false)
}

/// The phase of one worker as far as its pod tells. (Heartbeat staleness refines Idle into
/// Unhealthy in the relay.)
pub fn classify(pod: &Pod) -> WorkerPhase {
    if pod.metadata.deletion_timestamp.is_some() {
        return WorkerPhase::Terminating;
    }
    match pod_phase(pod) {
        "Failed" | "Succeeded" => return WorkerPhase::Unhealthy,
        "Running" => {}
        _ => return WorkerPhase::Starting,
    }
    if pod.labels().contains_key(labels::SESSION) {
        return WorkerPhase::Bound;
    }
    if pod_ready(pod) {
        WorkerPhase::Idle
    } else if any_container_running(pod) {
        WorkerPhase::Warming
    } else {
        WorkerPhase::Starting
    }
}

/// Classifies the pool's pods. Pods are ordered newest first so that scale-down removes the
/// youngest (least warmed) workers.
pub fn classify_all<'a>(
    pool: &CapsulePool,
    pods: &'a [Pod],
    signals: &dyn Fn(&Pod) -> WorkerSignals,
) -> Vec<ClassifiedPod<'a>> {
    let hash = worker_pod::template_hash(pool);
    let mut out: Vec<ClassifiedPod<'a>> = pods
        .iter()
        .map(|pod| {
            let seen = signals(pod);
            let mut phase = classify(pod);
            let stale = seen.stale
                && matches!(
                    phase,
                    WorkerPhase::Warming | WorkerPhase::Idle | WorkerPhase::Bound
                );
            let warmup_expired = !stale && seen.warmup_expired && phase == WorkerPhase::Warming;
            let warmup_failed = !stale
                && seen.warmup_failed
                && matches!(phase, WorkerPhase::Warming | WorkerPhase::Idle);
            if stale || warmup_expired || warmup_failed {
                phase = WorkerPhase::Unhealthy;
            }
            ClassifiedPod {
                pod,
                phase,
                current: worker_pod::is_current(pod, &hash),
                stale,
                warmup_expired,
                warmup_failed,
                worn_out: seen.worn_out && phase == WorkerPhase::Idle,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.pod
            .metadata
            .creation_timestamp
            .cmp(&a.pod.metadata.creation_timestamp)
            .then_with(|| a.pod.name_any().cmp(&b.pod.name_any()))
    });
    out
}

/// Decides deletions and creations so that the unbound, healthy workers reach `spec.replicas` plus
/// the sessions waiting for a worker, without the pool's live pods ever exceeding `spec.maxWorkers`.
/// Bound workers are never deleted unless they are unhealthy.
pub fn plan(pool: &CapsulePool, workers: &[ClassifiedPod<'_>], waiting_sessions: usize) -> Plan {
    let mut plan = Plan::default();
    let target = pool.spec.replicas.max(0) as usize + waiting_sessions;
    let max = pool.spec.max_workers.max(0) as usize;

    // Failed workers go first; outdated unbound ones are replaced (bound ones finish their session).
    for w in workers {
        match w.phase {
            WorkerPhase::Unhealthy if w.stale => {
                plan.delete.push((w.pod.name_any(), RemovalReason::Stale))
            }
            WorkerPhase::Unhealthy if w.warmup_expired => plan
                .delete
                .push((w.pod.name_any(), RemovalReason::WarmupTimeout)),
            WorkerPhase::Unhealthy if w.warmup_failed => plan
                .delete
                .push((w.pod.name_any(), RemovalReason::WarmupFailed)),
            WorkerPhase::Unhealthy => plan.delete.push((w.pod.name_any(), RemovalReason::Failed)),
            WorkerPhase::Idle if w.worn_out => plan
                .delete
                .push((w.pod.name_any(), RemovalReason::Recycled)),
            WorkerPhase::Starting | WorkerPhase::Warming | WorkerPhase::Idle if !w.current => plan
                .delete
                .push((w.pod.name_any(), RemovalReason::Outdated)),
            _ => {}
        }
    }

    let available: Vec<&ClassifiedPod<'_>> = workers
        .iter()
        .filter(|w| {
            w.current
                && !w.worn_out
                && matches!(
                    w.phase,
                    WorkerPhase::Starting | WorkerPhase::Warming | WorkerPhase::Idle
                )
        })
        .collect();
    let live_after_deletes = workers
        .iter()
        .filter(|w| w.phase != WorkerPhase::Terminating)
        .count()
        - plan.delete.len();

    if available.len() > target {
        // Starting and warming workers are cheaper to drop than warm idle ones.
        let mut surplus: Vec<&&ClassifiedPod<'_>> = available.iter().collect();
        surplus.sort_by_key(|w| match w.phase {
            WorkerPhase::Starting => 0,
            WorkerPhase::Warming => 1,
            _ => 2,
        });
        for w in surplus.into_iter().take(available.len() - target) {
            plan.delete
                .push((w.pod.name_any(), RemovalReason::ScaleDown));
        }
    } else {
        let need = target - available.len();
        let room = max.saturating_sub(live_after_deletes);
        plan.create = need.min(room);
        plan.blocked_by_max = need - plan.create;
    }
    plan
}
