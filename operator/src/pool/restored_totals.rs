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

use crate::relay::index::{Counters, PoolTotals};

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
    totals
}

fn zip(a: &Counters, b: &Counters, f: impl Fn(u64, u64) -> u64) -> Counters {
    Counters {
        exec_ok: f(a.exec_ok, b.exec_ok),
        exec_error: f(a.exec_error, b.exec_error),
        exec_cancelled: f(a.exec_cancelled, b.exec_cancelled),
        exec_timed_out: f(a.exec_timed_out, b.exec_timed_out),
        outputs_enqueued: f(a.outputs_enqueued, b.outputs_enqueued),
        outputs_sent: f(a.outputs_sent, b.outputs_sent),
        outputs_dropped: f(a.outputs_dropped, b.outputs_dropped),
        drain_timeouts: f(a.drain_timeouts, b.drain_timeouts),
        promises_created: f(a.promises_created, b.promises_created),
        promises_resolved: f(a.promises_resolved, b.promises_resolved),
        promises_rejected: f(a.promises_rejected, b.promises_rejected),
        promises_timed_out: f(a.promises_timed_out, b.promises_timed_out),
        promises_cancelled: f(a.promises_cancelled, b.promises_cancelled),
        interpreter_restarts: f(a.interpreter_restarts, b.interpreter_restarts),
    }
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
                out.counters = zip(&relay.counters, &restored.counters, u64::max);
                out.max_queue_depth = relay.max_queue_depth.max(restored.max_queue_depth);
                out.promise_high_water = relay.promise_high_water.max(restored.promise_high_water);
                if all_reported {
                    let base = PoolTotals {
                        counters: zip(&restored.counters, &relay.counters, u64::saturating_sub),
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
