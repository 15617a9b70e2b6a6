//! Scale-down delay: surplus unbound workers are kept for `spec.scaleDownDelaySeconds` before they
//! are removed, so a pool under steady session load does not start and delete a worker per session
//! (with `onRelease: Reset` each release returns a worker while its replacement is already warming).

use std::time::{Duration, Instant};

use capsule_crds::CapsulePoolSpec;

use super::plan::{Plan, RemovalReason};

/// The spec field that sets how many unbound workers a pool wants. A surplus that appears together
/// with a change of it was asked for (replicas lowered) and is removed at once; other edits, such
/// as a longer delay, leave a held surplus held. (`maxWorkers` only caps creation: lowering it
/// never removes a worker, so it does not count here.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    replicas: i32,
}

impl Target {
    pub fn of(spec: &CapsulePoolSpec) -> Self {
        Self {
            replicas: spec.replicas,
        }
    }
}

/// What a pool remembers between passes to time its surplus.
#[derive(Clone, Debug, Default)]
pub struct SurplusHold {
    /// Since when the pool has had a surplus under an unchanged target.
    since: Option<Instant>,
    /// The target of the last pass without a surplus. Unknown after an operator restart, which
    /// removes a surplus at once: nothing says how long it has been there.
    steady_target: Option<Target>,
}

impl SurplusHold {
    /// Takes the scale-down deletions out of `plan` while the surplus is younger than `delay`, and
    /// returns how long it may still be kept (None: nothing held).
    pub fn apply(
        &mut self,
        plan: &mut Plan,
        target: Target,
        delay: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let surplus = plan
            .delete
            .iter()
            .filter(|(_, reason)| *reason == RemovalReason::ScaleDown)
            .count();
        if surplus == 0 {
            self.since = None;
            self.steady_target = Some(target);
            return None;
        }
        if delay.is_zero() || self.steady_target != Some(target) {
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let remaining = delay.saturating_sub(now.saturating_duration_since(since));
        if remaining.is_zero() {
            return None;
        }
        plan.delete
            .retain(|(_, reason)| *reason != RemovalReason::ScaleDown);
        plan.held_surplus = surplus;
        Some(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(30);

    fn target(replicas: i32) -> Target {
        Target { replicas }
    }

    fn surplus_plan(n: usize) -> Plan {
        let mut plan = Plan::default();
        plan.delete.push(("failed".into(), RemovalReason::Failed));
        for i in 0..n {
            plan.delete
                .push((format!("spare-{i}"), RemovalReason::ScaleDown));
        }
        plan
    }

    fn steady(hold: &mut SurplusHold, replicas: i32, now: Instant) {
        assert_eq!(
            hold.apply(&mut Plan::default(), target(replicas), DELAY, now),
            None
        );
    }

    #[test]
    fn a_surplus_is_kept_for_the_delay_then_removed() {
        let start = Instant::now();
        let mut hold = SurplusHold::default();
        steady(&mut hold, 1, start);

        let mut plan = surplus_plan(2);
        let kept = hold.apply(&mut plan, target(1), DELAY, start + Duration::from_secs(1));
        assert_eq!(kept, Some(DELAY));
        assert_eq!(plan.delete, vec![("failed".into(), RemovalReason::Failed)]);
        assert_eq!(plan.held_surplus, 2);

        let mut plan = surplus_plan(2);
        let kept = hold.apply(&mut plan, target(1), DELAY, start + Duration::from_secs(21));
        assert_eq!(kept, Some(Duration::from_secs(10)));

        let mut plan = surplus_plan(2);
        assert_eq!(
            hold.apply(&mut plan, target(1), DELAY, start + Duration::from_secs(31)),
            None
        );
        assert_eq!(plan.delete.len(), 3, "failed worker and both spares go");
        assert_eq!(plan.held_surplus, 0);
    }

    #[test]
    fn the_clock_restarts_after_a_pass_without_surplus() {
        let start = Instant::now();
        let mut hold = SurplusHold::default();
        steady(&mut hold, 1, start);
        hold.apply(&mut surplus_plan(1), target(1), DELAY, start);
        steady(&mut hold, 1, start + Duration::from_secs(20));
        let kept = hold.apply(
            &mut surplus_plan(1),
            target(1),
            DELAY,
            start + Duration::from_secs(40),
        );
        assert_eq!(kept, Some(DELAY));
    }

    #[test]
    fn a_target_change_a_zero_delay_or_an_unknown_history_removes_at_once() {
        let start = Instant::now();
        let mut hold = SurplusHold::default();
        let mut plan = surplus_plan(1);
        assert_eq!(
            hold.apply(&mut plan, target(1), DELAY, start),
            None,
            "no history"
        );
        assert_eq!(plan.delete.len(), 2);

        steady(&mut hold, 1, start);
        let mut plan = surplus_plan(1);
        assert_eq!(
            hold.apply(&mut plan, target(2), DELAY, start),
            None,
            "target changed"
        );
        assert_eq!(plan.delete.len(), 2);

        let mut plan = surplus_plan(1);
        assert_eq!(
            hold.apply(&mut plan, target(1), Duration::ZERO, start),
            None,
            "delay 0"
        );
        assert_eq!(plan.delete.len(), 2);
    }
}
