//! The in-memory index of workers, fed by heartbeats. Nothing here touches the API server: the pool
//! controller reads it when it builds status, so a heartbeat costs a map update, not a write.
//!
//! Counters are monotonic per worker process. A worker whose process restarted (new `startedAt`, or
//! any counter going backwards) has its previous values folded into a base, as Prometheus treats a
//! counter reset; a worker that goes away has its totals folded into its pool's retired totals. So
//! pool totals never go backwards while the operator runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use capsule_protocol::checkpoint::LastCheckpoint;
use capsule_protocol::heartbeat::{Heartbeat, WarmupFailure, WorkerState};
use k8s_openapi::jiff::Timestamp;

pub use super::counters::Counters;

/// Identity of a worker: namespace and pod name.
pub type WorkerKey = (String, String);
/// Identity of a pool: namespace and pool name.
pub type PoolKey = (String, String);

/// The Python version a heartbeat's capabilities name (empty while the first interpreter starts).
fn python_version(hb: &Heartbeat) -> Option<String> {
    hb.capabilities
        .as_ref()
        .map(|c| c.python_version.clone())
        .filter(|v| !v.is_empty())
}

/// What the index knows of one worker.
#[derive(Clone, Debug)]
pub struct WorkerRecord {
    pub pool: String,
    pub last_seen: Instant,
    pub last_seen_at: Timestamp,
    pub seq: u64,
    pub started_at: String,
    pub state: WorkerState,
    pub session: Option<String>,
    pub rss_bytes: u64,
    /// The `capsule-worker` process alone.
    pub worker_rss_bytes: u64,
    pub cpu_percent: f64,
    pub namespace_size: u64,
    pub pending_promises: u64,
    pub promise_high_water: u64,
    pub max_queue_depth: u64,
    /// Counters as the current process reported them.
    pub raw: Counters,
    /// Counters of earlier processes of this worker.
    pub base: Counters,
    /// Process restarts seen (each new `startedAt`).
    pub process_restarts: u64,
    /// Last time an execution ran or finished, for the session idle timeout.
    pub last_activity: Instant,
    /// The same, as a time of day for the session's status.
    pub last_activity_at: Timestamp,
    /// The worker's totals when its current session (per its heartbeats) began, so the session's
    /// own counts are the difference.
    pub session_base: Counters,
    /// The process restarted while a session held the worker: the session's namespace is gone, so
    /// the worker is unhealthy and its session failed.
    pub lost_session: bool,
    /// The pool's warm-up code raises in this worker (from its latest heartbeat).
    pub warmup_failure: Option<WarmupFailure>,
    /// Its interpreter's Python version, from the capabilities of its first heartbeats.
    pub python_version: Option<String>,
    /// The newest checkpoint its current process wrote.
    pub last_checkpoint: Option<LastCheckpoint>,
}

impl WorkerRecord {
    pub fn totals(&self) -> Counters {
        let mut t = self.base;
        t.add(&self.raw);
        t
    }

    /// The record of a worker's first heartbeat: no base yet, and activity starts now.
    fn first(hb: &Heartbeat, raw: Counters, now: Instant) -> WorkerRecord {
        WorkerRecord {
            pool: hb.pool.clone(),
            last_seen: now,
            last_seen_at: Timestamp::now(),
            seq: hb.seq,
            started_at: hb.started_at.clone(),
            state: hb.state,
            session: hb.session.clone(),
            rss_bytes: hb.rss_bytes,
            worker_rss_bytes: hb.worker_rss_bytes,
            cpu_percent: hb.cpu_percent,
            namespace_size: hb.namespace_size,
            pending_promises: hb.bridge.pending,
            promise_high_water: hb.bridge.high_water,
            max_queue_depth: hb.executor.max_queue_depth,
            raw,
            base: Counters::default(),
            process_restarts: 0,
            last_activity: now,
            last_activity_at: Timestamp::now(),
            session_base: Counters::default(),
            lost_session: false,
            warmup_failure: hb.warmup_failure.clone(),
            python_version: python_version(hb),
            last_checkpoint: hb.last_checkpoint.clone(),
        }
    }

    /// Applies a later heartbeat of the same worker; an older one changes nothing.
    fn update(&mut self, hb: &Heartbeat, raw: Counters, bound: bool, now: Instant) -> Recorded {
        let restarted = self.started_at != hb.started_at || raw.any_below(&self.raw);
        if !restarted && hb.seq <= self.seq {
            return Recorded::Stale;
        }
        let outcome = if restarted {
            self.fold_restart(hb, bound);
            Recorded::ProcessRestarted
        } else {
            Recorded::Updated
        };
        if hb.state == WorkerState::Busy || raw.executions() != self.raw.executions() {
            self.last_activity = now;
            self.last_activity_at = Timestamp::now();
        }
        if self.session != hb.session {
            self.session_base = self.base;
            self.session_base.add(&self.raw);
        }
        self.take_latest(hb, raw, now);
        outcome
    }

    /// A new process: its counters start from zero again, so the old ones move into the base.
    fn fold_restart(&mut self, hb: &Heartbeat, bound: bool) {
        let previous = self.raw;
        self.base.add(&previous);
        self.process_restarts += 1;
        self.started_at = hb.started_at.clone();
        if bound || self.session.is_some() {
            self.lost_session = true;
        }
    }

    /// The heartbeat's values; high-water marks keep their maximum.
    fn take_latest(&mut self, hb: &Heartbeat, raw: Counters, now: Instant) {
        // clone_from keeps the buffers already held: a steady worker costs no allocation here.
        self.pool.clone_from(&hb.pool);
        self.last_seen = now;
        self.last_seen_at = Timestamp::now();
        self.seq = hb.seq;
        self.state = hb.state;
        self.session.clone_from(&hb.session);
        self.rss_bytes = hb.rss_bytes;
        self.worker_rss_bytes = hb.worker_rss_bytes;
        self.cpu_percent = hb.cpu_percent;
        self.namespace_size = hb.namespace_size;
        self.pending_promises = hb.bridge.pending;
        self.promise_high_water = self.promise_high_water.max(hb.bridge.high_water);
        self.max_queue_depth = self.max_queue_depth.max(hb.executor.max_queue_depth);
        self.raw = raw;
        self.warmup_failure.clone_from(&hb.warmup_failure);
        self.last_checkpoint.clone_from(&hb.last_checkpoint);
        if let Some(version) = python_version(hb) {
            self.python_version = Some(version);
        }
    }
}

/// Aggregates of one pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolTotals {
    pub counters: Counters,
    pub pending_promises: u64,
    pub promise_high_water: u64,
    pub max_queue_depth: u64,
    pub process_restarts: u64,
}

/// Outcome of recording one heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    First,
    Updated,
    ProcessRestarted,
    /// An older or duplicate sequence number from the same process: ignored.
    Stale,
}

/// A pool as the pool controller last published it for its Prometheus series, with the records
/// of its live workers.
#[derive(Clone, Debug, Default)]
pub struct PublishedPool {
    /// Its totals, restored ones included; counters kept at their highest, as a Prometheus
    /// counter only goes up.
    pub totals: PoolTotals,
    /// The pool asks for per-worker series (`spec.metrics.perWorker`).
    pub per_worker: bool,
    pub workers: Vec<(String, WorkerRecord)>,
}

#[derive(Debug, Default)]
struct Inner {
    workers: HashMap<WorkerKey, WorkerRecord>,
    retired: HashMap<PoolKey, PoolTotals>,
    /// Pools published for Prometheus (their `workers` left empty here), in a stable order.
    published: BTreeMap<PoolKey, PublishedPool>,
}

#[derive(Debug, Default)]
pub struct WorkerIndex {
    inner: Mutex<Inner>,
}

impl WorkerIndex {
    /// Records one heartbeat. `bound` says whether the operator has the pod bound to a session
    /// (its label), which the heartbeat itself may not show yet.
    pub fn record(&self, hb: &Heartbeat, bound: bool, now: Instant) -> Recorded {
        let raw = Counters::from_heartbeat(hb);
        let mut inner = self.inner.lock().expect("worker index lock");
        let key = (hb.namespace.clone(), hb.pod.clone());
        match inner.workers.get_mut(&key) {
            None => {
                inner.workers.insert(key, WorkerRecord::first(hb, raw, now));
                Recorded::First
            }
            Some(rec) => rec.update(hb, raw, bound, now),
        }
    }

    pub fn get(&self, namespace: &str, pod: &str) -> Option<WorkerRecord> {
        let inner = self.inner.lock().expect("worker index lock");
        inner
            .workers
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
    }

    /// Marks activity on a worker (a session was just bound), restarting its idle clock.
    pub fn touch(&self, namespace: &str, pod: &str, now: Instant) {
        let mut inner = self.inner.lock().expect("worker index lock");
        if let Some(rec) = inner
            .workers
            .get_mut(&(namespace.to_string(), pod.to_string()))
        {
            rec.last_activity = now;
        }
    }

    /// Age of the worker's last heartbeat, if it ever sent one.
    pub fn heartbeat_age(&self, namespace: &str, pod: &str, now: Instant) -> Option<Duration> {
        self.get(namespace, pod)
            .map(|r| now.saturating_duration_since(r.last_seen))
    }

    /// Folds the workers of `pool` that are not in `live_pods` into the pool's retired totals.
    pub fn retire_missing(&self, namespace: &str, pool: &str, live_pods: &[String]) {
        let mut inner = self.inner.lock().expect("worker index lock");
        let gone: Vec<WorkerKey> = inner
            .workers
            .iter()
            .filter(|((ns, pod), rec)| {
                ns == namespace && rec.pool == pool && !live_pods.contains(pod)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(rec) = inner.workers.remove(&key) {
                let retired = inner
                    .retired
                    .entry((namespace.to_string(), pool.to_string()))
                    .or_default();
                retired.counters.add(&rec.totals());
                retired.process_restarts += rec.process_restarts;
                retired.promise_high_water = retired.promise_high_water.max(rec.promise_high_water);
                retired.max_queue_depth = retired.max_queue_depth.max(rec.max_queue_depth);
            }
        }
    }

    /// Forgets a deleted pool entirely.
    pub fn forget_pool(&self, namespace: &str, pool: &str) {
        let mut inner = self.inner.lock().expect("worker index lock");
        inner
            .workers
            .retain(|(ns, _), rec| !(ns == namespace && rec.pool == pool));
        let key = (namespace.to_string(), pool.to_string());
        inner.retired.remove(&key);
        inner.published.remove(&key);
    }

    /// Publishes a pool's totals for its Prometheus series, which are served from here from then
    /// on (until [`Self::forget_pool`]).
    pub fn publish(&self, namespace: &str, pool: &str, totals: &PoolTotals, per_worker: bool) {
        let mut inner = self.inner.lock().expect("worker index lock");
        let key = (namespace.to_string(), pool.to_string());
        let published = inner.published.entry(key).or_default();
        let earlier = &published.totals;
        published.totals = PoolTotals {
            counters: earlier.counters.zip(&totals.counters, u64::max),
            process_restarts: earlier.process_restarts.max(totals.process_restarts),
            ..totals.clone()
        };
        published.per_worker = per_worker;
    }

    /// The published pools, each with its live workers' records, in a stable order.
    pub fn published_pools(&self) -> Vec<(PoolKey, PublishedPool)> {
        let inner = self.inner.lock().expect("worker index lock");
        let mut pools = inner.published.clone();
        for ((namespace, pod), record) in &inner.workers {
            let key = (namespace.clone(), record.pool.clone());
            if let Some(pool) = pools.get_mut(&key) {
                pool.workers.push((pod.clone(), record.clone()));
            }
        }
        for pool in pools.values_mut() {
            pool.workers.sort_by(|a, b| a.0.cmp(&b.0));
        }
        pools.into_iter().collect()
    }

    /// Totals of a pool: its live workers plus those retired.
    pub fn pool_totals(&self, namespace: &str, pool: &str) -> PoolTotals {
        let inner = self.inner.lock().expect("worker index lock");
        let mut out = inner
            .retired
            .get(&(namespace.to_string(), pool.to_string()))
            .cloned()
            .unwrap_or_default();
        out.pending_promises = 0;
        for ((ns, _), rec) in inner.workers.iter() {
            if ns == namespace && rec.pool == pool {
                out.counters.add(&rec.totals());
                out.pending_promises += rec.pending_promises;
                out.promise_high_water = out.promise_high_water.max(rec.promise_high_water);
                out.max_queue_depth = out.max_queue_depth.max(rec.max_queue_depth);
                out.process_restarts += rec.process_restarts;
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("worker index lock").workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_protocol::heartbeat::*;

    fn hb(pod: &str, seq: u64, started: &str, ok: u64) -> Heartbeat {
        Heartbeat {
            pod: pod.into(),
            namespace: "ns".into(),
            pool: "p".into(),
            seq,
            sent_at: "2026-11-27T10:00:00Z".into(),
            started_at: started.into(),
            capabilities: None,
            state: WorkerState::Idle,
            session: None,
            rss_bytes: 1000,
            worker_rss_bytes: 400,
            cpu_percent: 1.5,
            cpu_millis: ok * 10,
            namespace_size: 3,
            interpreter_restarts: 0,
            executions: ExecutionCounts {
                ok,
                ..Default::default()
            },
            executor: ExecutorCounters::default(),
            bridge: BridgeCounters::default(),
            cancels: CancelCounters::default(),
            modes: ModeCounts::default(),
            blocking_call_warnings: 0,
            transactions_rolled_back: 0,
            trace: Default::default(),
            warmup_failure: None,
            checkpoints_created: 0,
            checkpoints_restored: 0,
            checkpoint_failures: 0,
            last_checkpoint: None,
        }
    }

    #[test]
    fn totals_survive_a_worker_process_restart_and_its_removal() {
        let index = WorkerIndex::default();
        let t = Instant::now();
        assert_eq!(
            index.record(&hb("w1", 1, "A", 5), false, t),
            Recorded::First
        );
        assert_eq!(
            index.record(&hb("w1", 2, "A", 7), false, t),
            Recorded::Updated
        );
        assert_eq!(
            index.record(&hb("w1", 2, "A", 7), false, t),
            Recorded::Stale,
            "a duplicate is ignored"
        );
        // The process restarted: its counters start again from zero.
        assert_eq!(
            index.record(&hb("w1", 1, "B", 2), false, t),
            Recorded::ProcessRestarted
        );
        assert_eq!(index.pool_totals("ns", "p").counters.exec_ok, 9);
        index.record(&hb("w2", 1, "C", 1), false, t);
        assert_eq!(index.pool_totals("ns", "p").counters.exec_ok, 10);
        // w1 goes away: its 9 stay in the pool's totals.
        index.retire_missing("ns", "p", &["w2".to_string()]);
        assert_eq!(index.len(), 1);
        let totals = index.pool_totals("ns", "p");
        assert_eq!(totals.counters.exec_ok, 10);
        assert_eq!(totals.process_restarts, 1);
        // CPU time too (10 ms per execution here): the pool's CPU counter never goes down.
        assert_eq!(totals.counters.cpu_millis, 100);
    }

    #[test]
    fn a_counter_going_backwards_is_a_reset() {
        let index = WorkerIndex::default();
        let t = Instant::now();
        index.record(&hb("w1", 1, "A", 5), false, t);
        assert_eq!(
            index.record(&hb("w1", 2, "A", 1), false, t),
            Recorded::ProcessRestarted
        );
        assert_eq!(index.pool_totals("ns", "p").counters.exec_ok, 6);
    }
}
