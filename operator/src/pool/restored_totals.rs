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
