//! What every reconcile shares: the client, the event recorder, metrics, settings and the
//! in-memory index of pools.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use capsule_crds::{CapsuleSession, PoolCounters};
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::relay::directory::Directory;
use crate::relay::index::WorkerIndex;
use crate::watch_cache::WatchCache;

use crate::config::OperatorConfig;
use crate::health::Health;
use crate::metrics::Metrics;

/// Identity of a pool in the index.
pub type PoolKey = (String, String);

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
    /// Pods with per-worker series exported, to remove them when they go.
    pub per_worker_series: BTreeSet<String>,
    /// When status was last written (or the pool first seen by this process).
    pub last_status_write: Option<Instant>,
    /// Relayed totals restored from the pool's status, so they survive an operator restart.
    pub restored_totals: crate::pool::restored_totals::RestoredTotals,
    /// How long the pool has had surplus workers, for `spec.scaleDownDelaySeconds`.
    pub surplus_hold: crate::pool::scale_down::SurplusHold,
    /// Set while the pool's warm-up code keeps raising.
    pub warmup_failing: Option<crate::pool::warmup_failing::WarmupFailing>,
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

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: OperatorConfig,
    pub health: Arc<Health>,
    /// Workers as their heartbeats describe them.
    pub index: Arc<WorkerIndex>,
    /// The pool controller's session cache, once it runs: pools count the sessions waiting on them
    /// and look up the sessions their workers are bound to.
    pub sessions: OnceLock<WatchCache<CapsuleSession>>,
    /// Pool tokens and pod facts from watch caches, once they run.
    pub directory: OnceLock<Arc<dyn Directory>>,
    /// Client for calls to workers (session bind and release).
    pub http: reqwest::Client,
    /// When this process started: a worker never heard from is not stale before the operator
    /// has waited a staleness period itself.
    pub started: Instant,
    pools: Mutex<HashMap<PoolKey, PoolState>>,
    /// What this process knows of each pending session (by uid). An entry goes when its session
    /// binds or ends.
    pub pending_sessions: Mutex<HashMap<String, PendingAcquisition>>,
}

/// One pending session's acquisition as this process saw it.
#[derive(Clone, Copy, Debug)]
pub struct PendingAcquisition {
    /// When this process first saw it, for latencies finer than `creationTimestamp`'s seconds.
    pub first_seen: Instant,
    /// This process counted its acquisition attempt, or its miss. A pass can run on a cached
    /// session that predates the status write recording them (the worker started for a miss
    /// wakes the session before its own status event arrives): these keep it from counting again.
    pub attempt_counted: bool,
    pub miss_counted: bool,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        config: OperatorConfig,
        health: Arc<Health>,
    ) -> Self {
        let reporter = Reporter {
            controller: "capsule-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            config,
            health,
            index: Arc::new(WorkerIndex::default()),
            sessions: OnceLock::new(),
            directory: OnceLock::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            started: Instant::now(),
            pools: Mutex::new(HashMap::new()),
            pending_sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the pool's remembered state, creating it from `seed` when first seen.
    pub fn with_pool<R>(
        &self,
        key: &PoolKey,
        seed: impl FnOnce() -> PoolCounters,
        f: impl FnOnce(&mut PoolState) -> R,
    ) -> R {
        let mut pools = self.pools.lock().expect("pool index lock");
        let state = pools.entry(key.clone()).or_insert_with(|| PoolState {
            counters: seed(),
            ..Default::default()
        });
        f(state)
    }

    /// Forgets a deleted pool.
    pub fn forget_pool(&self, key: &PoolKey) {
        self.pools.lock().expect("pool index lock").remove(key);
    }

    /// Pools currently remembered.
    pub fn known_pools(&self) -> Vec<PoolKey> {
        self.pools
            .lock()
            .expect("pool index lock")
            .keys()
            .cloned()
            .collect()
    }
}
