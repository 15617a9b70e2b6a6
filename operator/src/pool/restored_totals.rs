//! Pool totals that survive an operator restart.
//!
//! The relay's index lives in memory: after a restart it knows only the workers that heartbeat
//! again, so the totals of workers that went away before the restart would vanish and the pool's
//! counters in status would go backwards. On first sight of a pool the operator keeps the totals
//! of its last written status. Until every running worker has reported again, each counter shows
//! the larger of that restored value and the relay's sum; then the difference becomes a fixed base
//! (the totals of the departed workers) added to the relay's sum from then on. The figure never
//! goes backwards; work done between the last status write and a worker's first heartbeat after
//! the restart may be counted in the base and the worker both, or in neither, never twice over
//! the restored value.

use capsule_crds::CapsulePoolStatus;

use crate::relay::index::PoolTotals;

/// What one pool restored from its status, and whether the base is fixed yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RestoredTotals {
    /// The pool has not been seen by this process yet.
    #[default]
    Unseen,
    /// Waiting for every running worker to report: show at least these figures.
    Pending(PoolTotals),
    /// The departed workers' totals, added to the relay's sum.
    Base(PoolTotals),
}

/// The totals of a pool's last written status.
pub fn from_status(status: Option<&CapsulePoolStatus>) -> PoolTotals {
    let Some(status) = status else {
        return PoolTotals::default();
    };
    let n = |v: i64| v.max(0) as u64;
    let mut totals = PoolTotals::default();
    if let Some(e) = &status.executions {
        totals.counters.exec_ok = n(e.ok);
        totals.counters.exec_error = n(e.error);
        totals.counters.exec_cancelled = n(e.cancelled);
        totals.counters.exec_timed_out = n(e.timed_out);
        totals.counters.transactions_rolled_back = n(e.rolled_back);
    }
    if let Some(e) = &status.executor {
        totals.counters.outputs_enqueued = n(e.outputs_enqueued);
        totals.counters.outputs_sent = n(e.outputs_sent);
        totals.counters.outputs_dropped = n(e.outputs_dropped);
        totals.counters.drain_timeouts = n(e.drain_timeouts);
        totals.max_queue_depth = n(e.max_queue_depth);
    }
    if let Some(b) = &status.bridge {
        totals.counters.promises_created = n(b.created);
        totals.counters.promises_resolved = n(b.resolved);
        totals.counters.promises_rejected = n(b.rejected);
        totals.counters.promises_timed_out = n(b.timeouts);
        totals.counters.promises_cancelled = n(b.cancellations);
        totals.promise_high_water = n(b.high_water);
    }
    if let Some(e) = &status.executor {
        totals.counters.interpreter_restarts = n(e.interpreter_restarts);
    }
    if let Some(c) = &status.cancels {
        totals.counters.cancels_requested = n(c.requested);
        totals.counters.cancels_effective = n(c.effective);
        totals.counters.cancels_noop = n(c.noop);
        totals.counters.cancels_interrupted = n(c.interrupted);
        totals.counters.cancels_killed = n(c.killed);
    }
    if let Some(t) = &status.trace {
        totals.counters.trace_sent = n(t.sent);
        totals.counters.trace_dropped = n(t.dropped);
    }
    if let Some(k) = &status.checkpoints {
        totals.counters.checkpoints_created = n(k.created);
        totals.counters.checkpoints_restored = n(k.restored);
        totals.counters.checkpoint_failures = n(k.failed);
    }
    if let Some(m) = &status.modes {
        totals.counters.mode_plain = n(m.plain);
        totals.counters.mode_top_level_await = n(m.top_level_await);
        totals.counters.mode_async_def = n(m.async_def);
        totals.counters.blocking_call_warnings = n(m.blocking_call_warnings);
    }
    totals
}

impl RestoredTotals {
    /// Combines the relay's totals with what was restored. `all_reported` says every running
    /// worker has sent a heartbeat to this process (or the wait for them is over): the base is
    /// then fixed.
    pub fn apply(&mut self, relay: &PoolTotals, all_reported: bool) -> PoolTotals {
        let mut out = relay.clone();
        match self {
            Self::Unseen => {}
            Self::Pending(restored) => {
                out.counters = relay.counters.zip(&restored.counters, u64::max);
                out.max_queue_depth = relay.max_queue_depth.max(restored.max_queue_depth);
                out.promise_high_water = relay.promise_high_water.max(restored.promise_high_water);
                if all_reported {
                    let base = PoolTotals {
                        counters: restored.counters.zip(&relay.counters, u64::saturating_sub),
                        max_queue_depth: restored.max_queue_depth,
                        promise_high_water: restored.promise_high_water,
                        ..Default::default()
                    };
                    *self = Self::Base(base);
                }
            }
            Self::Base(base) => {
                out.counters.add(&base.counters);
                out.max_queue_depth = relay.max_queue_depth.max(base.max_queue_depth);
                out.promise_high_water = relay.promise_high_water.max(base.promise_high_water);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::index::Counters;

    fn totals(ok: u64) -> PoolTotals {
        PoolTotals {
            counters: Counters {
                exec_ok: ok,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn counters_never_go_backwards_across_a_restart() {
        // Status said 100 executions: 60 by a worker still running, 40 by one that went away.
        let mut restored = RestoredTotals::Pending(totals(100));
        // Before the live worker reports, the restored figure holds.
        assert_eq!(restored.apply(&totals(0), false).counters.exec_ok, 100);
        // It reports 60: the base becomes the departed 40.
        assert_eq!(restored.apply(&totals(60), true).counters.exec_ok, 100);
        assert_eq!(restored, RestoredTotals::Base(PoolTotals { ..totals(40) }));
        // Ten more executions show as ten more.
        assert_eq!(restored.apply(&totals(70), true).counters.exec_ok, 110);
    }

    #[test]
    fn a_pool_seen_for_the_first_time_shows_the_relay() {
        let mut restored = RestoredTotals::Unseen;
        assert_eq!(restored.apply(&totals(5), true), totals(5));
    }
}
