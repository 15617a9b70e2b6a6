//! Which Ready, Progressing and Degraded conditions a pass wants, and why: the reasons and
//! messages users read in `kubectl describe`.

use capsule_crds::CapsulePool;

use super::{Observation, PhaseTally};
use crate::conditions::DesiredCondition;

/// Ready, Progressing and Degraded, in that order.
pub(super) fn desired(
    pool: &CapsulePool,
    seen: &Observation<'_>,
    tally: &PhaseTally,
) -> Vec<DesiredCondition> {
    if !seen.problems.is_empty() {
        return invalid_spec(seen.problems);
    }
    vec![
        ready(pool, seen, tally),
        progressing(pool, seen, tally),
        degraded(seen, tally),
    ]
}

fn invalid_spec(problems: &[String]) -> Vec<DesiredCondition> {
    let message = problems.join("; ");
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
}

fn ready(pool: &CapsulePool, seen: &Observation<'_>, tally: &PhaseTally) -> DesiredCondition {
    let PhaseTally {
        idle,
        starting,
        warming,
        bound,
        ..
    } = *tally;
    let target = pool.spec.replicas;
    if let (true, Some(message)) = (idle < target, &seen.warmup_failing) {
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
            format!("{idle} of {target} warm workers idle, {starting} starting, {warming} warming"),
        )
    }
}

fn progressing(pool: &CapsulePool, seen: &Observation<'_>, tally: &PhaseTally) -> DesiredCondition {
    let PhaseTally {
        starting, warming, ..
    } = *tally;
    if seen.plan.create > 0 || !seen.plan.delete.is_empty() {
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
    } else if seen.plan.held_surplus > 0 {
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
}

fn degraded(seen: &Observation<'_>, tally: &PhaseTally) -> DesiredCondition {
    let unhealthy = tally.unhealthy;
    if let Some(failure) = &seen.failure {
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
    }
}
