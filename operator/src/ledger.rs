//! The operator's memory of each pool between reconciles, with one owner: [`PoolLedger`]. The
//! pool controller keeps its pool's state through [`PoolLedger::update`]; the session controller
//! only records what it saw (an attempt, a miss, a timeout, an acquisition, a released worker).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use capsule_crds::{CapsulePool, PoolCounters};
use k8s_openapi::api::core::v1::Pod;

use crate::context::PoolKey;

/// What the operator remembers of one pool between reconciles.
#[derive(Clone, Debug, Default)]
pub struct PoolState {
    /// The pool's counters; seeded from its status when first seen so they survive an operator
    /// restart, then kept here so a stale cached status cannot undo an increment.
    pub counters: PoolCounters,
    /// Consecutive failed reconciles, for the retry backoff.
    pub failures: u32,
    /// Workers already counted as a health trigger, so each is counted once.
    pub unhealthy: BTreeSet<String>,
    /// Whether idle workers were below the warm target at the last pass (a warm-up trigger fires
    /// on the transition, not on every pass).
    pub below_target: bool,
    /// Recent acquisition latencies in milliseconds, at most [`LATENCY_WINDOW`].
    pub latencies_ms: VecDeque<i64>,
    /// Worker process restarts already added to `counters.workers_restarted`.
    pub restarts_seen: u64,
    /// When status was last written (or the pool first seen by this process).
    pub last_status_write: Option<Instant>,
    /// Relayed totals restored from the pool's status, so they survive an operator restart.
    pub restored_totals: crate::pool::restored_totals::RestoredTotals,
    /// How long the pool has had surplus workers, for `spec.scaleDownDelaySeconds`.
    pub surplus_hold: crate::pool::scale_down::SurplusHold,
    /// Set while the pool's warm-up code keeps raising.
    pub warmup_failing: Option<crate::pool::warmup_failing::WarmupFailing>,
    /// Writes to the pool's pods its pod cache may not show yet (both controllers record theirs).
    pub pod_writes: crate::pool::expectations::PodExpectations,
}

/// Whether a failed write may still have been applied: the server did not answer with a refusal
/// (a timeout, a dropped connection, a server error).
fn outcome_unknown(error: &kube::Error) -> bool {
    !matches!(error, kube::Error::Api(status) if status.code < 500)
}

/// How many recent acquisition latencies a pool keeps for its status quantiles.
pub const LATENCY_WINDOW: usize = 1024;

impl PoolState {
    pub fn record_latency(&mut self, ms: i64) {
        if self.latencies_ms.len() == LATENCY_WINDOW {
            self.latencies_ms.pop_front();
        }
        self.latencies_ms.push_back(ms);
        let mut sorted: Vec<i64> = self.latencies_ms.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let acquisition = &mut self.counters.acquisition;
        acquisition.latency_avg_ms = Some(sorted.iter().sum::<i64>() / sorted.len() as i64);
        acquisition.latency_p50_ms = Some(at(0.5));
        acquisition.latency_p99_ms = Some(at(0.99));
    }
}

/// What the session controller saw of one acquisition that got a worker.
pub struct Acquired {
    /// This pass is the session's first look at the pool, so the attempt is counted now.
    pub first_pass: bool,
    pub warm_hit: bool,
    pub latency_ms: i64,
}

/// Each pool's [`PoolState`], created on first sight from the pool's last written status.
#[derive(Default)]
pub struct PoolLedger {
    pools: Mutex<HashMap<PoolKey, PoolState>>,
}

/// The pool's counters as its last written status has them: the in-memory counters start from
/// there after a restart, whichever controller sees the pool first.
fn seed(pool: Option<&CapsulePool>) -> PoolCounters {
    pool.and_then(|p| p.status.as_ref())
        .and_then(|s| s.pool.clone())
        .unwrap_or_default()
}

impl PoolLedger {
    fn with<R>(
        &self,
        key: &PoolKey,
        pool: Option<&CapsulePool>,
        f: impl FnOnce(&mut PoolState) -> R,
    ) -> R {
        let mut pools = self.pools.lock().expect("pool ledger lock");
        let state = pools.entry(key.clone()).or_insert_with(|| PoolState {
            counters: seed(pool),
            ..Default::default()
        });
        f(state)
    }

    /// Remembers `pool` from its status the first time this process sees it.
    pub fn open(&self, key: &PoolKey, pool: &CapsulePool) {
        self.with(key, Some(pool), |_| ());
    }

    /// The pool controller's read-modify-write of its own pool's state.
    pub fn update<R>(&self, key: &PoolKey, f: impl FnOnce(&mut PoolState) -> R) -> R {
        self.with(key, None, f)
    }

    pub fn count_attempt(&self, key: &PoolKey, pool: &CapsulePool) {
        self.with(key, Some(pool), |s| s.counters.acquisition.attempts += 1);
    }

    pub fn count_miss(&self, key: &PoolKey, pool: &CapsulePool) {
        self.with(key, Some(pool), |s| s.counters.misses += 1);
    }

    pub fn count_timeout(&self, key: &PoolKey, pool: &CapsulePool) {
        self.with(key, Some(pool), |s| s.counters.acquisition.timeouts += 1);
    }

    /// A worker the session controller removed on release (`pool` is gone when it was deleted).
    pub fn count_released_worker(&self, key: &PoolKey, pool: Option<&CapsulePool>) {
        self.with(key, pool, |s| s.counters.workers_removed += 1);
    }

    pub fn record_acquired(&self, key: &PoolKey, pool: &CapsulePool, acquired: Acquired) {
        self.with(key, Some(pool), |s| {
            if acquired.first_pass {
                s.counters.acquisition.attempts += 1;
            }
            s.counters.acquisition.successes += 1;
            if acquired.warm_hit {
                s.counters.hits += 1;
            }
            s.record_latency(acquired.latency_ms);
        });
    }

    /// Whether `cached` (the pod cache's copy of the pool's pods) shows every write this process
    /// made to them, so a decision may be made on it.
    pub fn cache_shows_writes(&self, key: &PoolKey, cached: &[Pod]) -> bool {
        self.with(key, None, |s| s.pod_writes.met_by(cached, Instant::now()))
    }

    /// The outcome of a create or patch of one of the pool's pods, for the pool's cache reads.
    pub fn record_pod_write(&self, key: &PoolKey, written: &Result<Pod, kube::Error>) {
        let now = Instant::now();
        self.with(key, None, |s| match written {
            Ok(pod) => s.pod_writes.written(pod, now),
            Err(error) if outcome_unknown(error) => s.pod_writes.write_failed(),
            Err(_) => {}
        });
    }

    /// The outcome of a delete of one of the pool's pods, for the pool's cache reads.
    pub fn record_pod_delete<T>(&self, key: &PoolKey, pod: &str, deleted: &Result<T, kube::Error>) {
        let now = Instant::now();
        self.with(key, None, |s| match deleted {
            Ok(_) => s.pod_writes.deleted(pod, now),
            Err(kube::Error::Api(status)) if status.code == 404 => s.pod_writes.deleted(pod, now),
            Err(error) if outcome_unknown(error) => s.pod_writes.write_failed(),
            Err(_) => {}
        });
    }

    /// Forgets a deleted pool.
    pub fn forget(&self, key: &PoolKey) {
        self.pools.lock().expect("pool ledger lock").remove(key);
    }

    /// Pools currently remembered.
    pub fn known(&self) -> Vec<PoolKey> {
        let pools = self.pools.lock().expect("pool ledger lock");
        pools.keys().cloned().collect()
    }
}
