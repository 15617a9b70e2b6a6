//! Scale-down delay: surplus unbound workers are kept for `spec.scaleDownDelaySeconds` before they
//! are removed, so a pool under steady session load does not start and delete a worker per session
//! (with `onRelease: Reset` each release returns a worker while its replacement is already warming).

use std::time::{Duration, Instant};

use super::plan::{Plan, RemovalReason};

/// What a pool remembers between passes to time its surplus.
#[derive(Clone, Debug, Default)]
pub struct SurplusHold {
    /// Since when the pool has had a surplus, without a spec change in between.
    since: Option<Instant>,
    /// The spec generation of the last pass without a surplus. A surplus under a newer generation
    /// comes from a change of the spec (such as lower replicas): the user asked for it, so it is
    /// removed at once. Unknown after an operator restart, which removes a surplus at once too.
    steady_generation: Option<i64>,
}

impl SurplusHold {
    /// Takes the scale-down deletions out of `plan` while the surplus is younger than `delay`, and
    /// returns how long it may still be kept (None: nothing held).
    pub fn apply(
        &mut self,
        plan: &mut Plan,
        generation: Option<i64>,
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
            self.steady_generation = generation;
            return None;
        }
        if delay.is_zero() || generation.is_none() || self.steady_generation != generation {
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

    fn surplus_plan(n: usize) -> Plan {
        let mut plan = Plan::default();
        plan.delete.push(("failed".into(), RemovalReason::Failed));
        for i in 0..n {
            plan.delete
                .push((format!("spare-{i}"), RemovalReason::ScaleDown));
        }
        plan
    }

    fn steady(hold: &mut SurplusHold, generation: i64, now: Instant) {
        assert_eq!(
            hold.apply(&mut Plan::default(), Some(generation), DELAY, now),
            None
        );
    }

    #[test]
    fn a_surplus_is_kept_for_the_delay_then_removed() {
        let start = Instant::now();
        let mut hold = SurplusHold::default();
        steady(&mut hold, 1, start);

        let mut plan = surplus_plan(2);
        let kept = hold.apply(&mut plan, Some(1), DELAY, start + Duration::from_secs(1));
        assert_eq!(kept, Some(DELAY));
        assert_eq!(plan.delete, vec![("failed".into(), RemovalReason::Failed)]);
        assert_eq!(plan.held_surplus, 2);

        let mut plan = surplus_plan(2);
        let kept = hold.apply(&mut plan, Some(1), DELAY, start + Duration::from_secs(21));
        assert_eq!(kept, Some(Duration::from_secs(10)));

        let mut plan = surplus_plan(2);
        assert_eq!(
            hold.apply(&mut plan, Some(1), DELAY, start + Duration::from_secs(31)),
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
        hold.apply(&mut surplus_plan(1), Some(1), DELAY, start);
        steady(&mut hold, 1, start + Duration::from_secs(20));
        let kept = hold.apply(
            &mut surplus_plan(1),
            Some(1),
            DELAY,
            start + Duration::from_secs(40),
        );
        assert_eq!(kept, Some(DELAY));
    }

    #[test]
    fn a_spec_change_a_zero_delay_or_an_unknown_history_removes_at_once() {
        let start = Instant::now();
        let mut hold = SurplusHold::default();
        let mut plan = surplus_plan(1);
        assert_eq!(
            hold.apply(&mut plan, Some(1), DELAY, start),
            None,
            "no history"
        );
        assert_eq!(plan.delete.len(), 2);

        steady(&mut hold, 1, start);
        let mut plan = surplus_plan(1);
        assert_eq!(
            hold.apply(&mut plan, Some(2), DELAY, start),
            None,
            "replicas lowered"
        );
        assert_eq!(plan.delete.len(), 2);

        let mut plan = surplus_plan(1);
        assert_eq!(
            hold.apply(&mut plan, Some(1), Duration::ZERO, start),
            None,
            "delay 0"
        );
        assert_eq!(plan.delete.len(), 2);
    }
}
