//! What every reconcile shares: the client, the event recorder, metrics, settings and the
//! in-memory index of pools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use capsule_crds::PoolCounters;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

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
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: OperatorConfig,
    pub health: Arc<Health>,
    pools: Mutex<HashMap<PoolKey, PoolState>>,
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
            pools: Mutex::new(HashMap::new()),
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
            failures: 0,
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
