//! Rate limits on heartbeat ingest, so one misbehaving worker (or a client with a stolen pool
//! token) cannot crowd out the others: an overall budget checked before a body is parsed, and a
//! per-pod budget checked once the pod is known to be a worker of the pool whose token it sent.

use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Most pods whose budgets are remembered at once; pods idle for a while are forgotten first.
pub const MAX_TRACKED_PODS: usize = 100_000;

/// Heartbeats per second accepted, and how many may come at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Defaults: a worker sends one heartbeat per interval (5 s by default, 1 s at the least), plus one
/// at start; 10,000 workers at 1 s fit the overall budget.
pub const DEFAULT_PER_POD: Rate = Rate {
    per_second: NonZeroU32::new(2).unwrap(),
    burst: NonZeroU32::new(10).unwrap(),
};
pub const DEFAULT_OVERALL: Rate = Rate {
    per_second: NonZeroU32::new(20_000).unwrap(),
    burst: NonZeroU32::new(40_000).unwrap(),
};

/// Which budget a heartbeat ran out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Overall,
    Pod,
}

type PodKey = (String, String);

pub struct IngestLimits {
    overall: DefaultDirectRateLimiter,
    per_pod: RateLimiter<PodKey, DefaultKeyedStateStore<PodKey>, DefaultClock>,
    // Serialises the rare clean-up of the per-pod map when it reaches its bound.
    sweeping: Mutex<()>,
}

impl IngestLimits {
    pub fn new(overall: Rate, per_pod: Rate) -> Self {
        Self {
            overall: RateLimiter::direct(overall.quota()),
            per_pod: RateLimiter::keyed(per_pod.quota()),
            sweeping: Mutex::new(()),
        }
    }

    /// Checked before the body is read: the cost of a refused flood is one atomic operation.
    pub fn check_overall(&self) -> Result<(), Exceeded> {
        self.overall.check().map_err(|_| Exceeded::Overall)
    }

    /// Checked for an authenticated worker pod.
    pub fn check_pod(&self, namespace: &str, pod: &str) -> Result<(), Exceeded> {
        if self.per_pod.len() >= MAX_TRACKED_PODS {
            if let Ok(_guard) = self.sweeping.try_lock() {
                // Budgets that are full again carry no information and are dropped.
                self.per_pod.retain_recent();
                self.per_pod.shrink_to_fit();
            }
            if self.per_pod.len() >= MAX_TRACKED_PODS {
                // Every remembered pod is active: refuse new ones rather than grow without bound.
                return Err(Exceeded::Pod);
            }
        }
        self.per_pod
            .check_key(&(namespace.to_owned(), pod.to_owned()))
            .map_err(|_| Exceeded::Pod)
    }

    /// Pods whose budgets are remembered now.
    pub fn tracked_pods(&self) -> usize {
        self.per_pod.len()
    }
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self::new(DEFAULT_OVERALL, DEFAULT_PER_POD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_past_its_burst_is_refused_while_another_pod_is_not() {
        let limits = IngestLimits::new(DEFAULT_OVERALL, Rate::new(1, 3).unwrap());
        for _ in 0..3 {
            assert_eq!(limits.check_pod("ns", "noisy"), Ok(()));
        }
        assert_eq!(limits.check_pod("ns", "noisy"), Err(Exceeded::Pod));
        assert_eq!(limits.check_pod("ns", "quiet"), Ok(()));
        assert_eq!(limits.check_pod("other", "noisy"), Ok(()));
    }

    #[test]
    fn the_overall_budget_is_shared() {
        let limits = IngestLimits::new(Rate::new(1, 2).unwrap(), DEFAULT_PER_POD);
        assert_eq!(limits.check_overall(), Ok(()));
        assert_eq!(limits.check_overall(), Ok(()));
        assert_eq!(limits.check_overall(), Err(Exceeded::Overall));
    }

    #[test]
    fn zero_rates_are_not_a_rate() {
        assert_eq!(Rate::new(0, 1), None);
        assert_eq!(Rate::new(1, 0), None);
    }
}
