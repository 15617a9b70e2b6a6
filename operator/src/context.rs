//! What every reconcile shares: the client, the event recorder, metrics, settings and the
//! in-memory index of pools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, CapsuleSession};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::ledger::PoolLedger;
use crate::relay::directory::Directory;
use crate::relay::index::WorkerIndex;
use crate::relay::wakeups::PoolWakeups;
use crate::session::claims::WorkerClaims;
use crate::watch_cache::{GroupedCache, WatchCache};

use crate::config::OperatorConfig;
use crate::health::Health;
use crate::metrics::Metrics;

/// Identity of a pool in the index.
pub type PoolKey = (String, String);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: OperatorConfig,
    pub health: Arc<Health>,
    /// Workers as their heartbeats describe them.
    pub index: Arc<WorkerIndex>,
    /// The session cache the pool controller drives: pools count the sessions waiting on them and
    /// look up the sessions their workers are bound to. `None` only where no cache runs (API-call
    /// tests), and then every read goes to the API server.
    pub sessions: Option<GroupedCache<CapsuleSession>>,
    /// The pools, which the pool controller drives; sessions read their pool from it (`None` as
    /// `sessions`).
    pub pools: Option<WatchCache<CapsulePool>>,
    /// Workers this process is taking for a session right now.
    pub claims: WorkerClaims,
    /// Pools whose waiting sessions heartbeat ingest asks to look again.
    pub wakeups: Arc<PoolWakeups>,
    /// Pool tokens and pod facts from the relay's watch caches (`None` as `sessions`).
    pub directory: Option<Arc<dyn Directory>>,
    /// The pools' NetworkPolicies, which the pool controller drives (`None` as `sessions`).
    pub network_policies: Option<WatchCache<NetworkPolicy>>,
    /// Client for calls to workers (session bind and release).
    pub http: reqwest::Client,
    /// When this process started: a worker never heard from is not stale before the operator
    /// has waited a staleness period itself.
    pub started: Instant,
    /// What this process remembers of each pool between reconciles.
    pub ledger: PoolLedger,
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
    /// Records a write of one of a pool's pods: for the pool's cache reads (the ledger) and for
    /// heartbeat ingest's view, which shows it before the watch delivers it.
    pub fn pod_written(&self, key: &PoolKey, outcome: &Result<Pod, kube::Error>) {
        self.ledger.record_pod_write(key, outcome);
        if let (Ok(pod), Some(directory)) = (outcome, self.directory.as_ref()) {
            directory.wrote(pod);
        }
    }

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
            sessions: None,
            pools: None,
            claims: WorkerClaims::default(),
            wakeups: Arc::default(),
            directory: None,
            network_policies: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            started: Instant::now(),
            ledger: PoolLedger::default(),
            pending_sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The context with its watch caches, complete before any controller starts.
    pub fn with_caches(self, caches: WatchCaches) -> Self {
        Self {
            sessions: Some(caches.sessions),
            pools: Some(caches.pools),
            directory: Some(caches.directory),
            network_policies: Some(caches.network_policies),
            ..self
        }
    }
}

/// The watch caches the controllers read, made at start-up.
pub struct WatchCaches {
    pub sessions: GroupedCache<CapsuleSession>,
    pub pools: WatchCache<CapsulePool>,
    pub directory: Arc<dyn Directory>,
    pub network_policies: WatchCache<NetworkPolicy>,
}
