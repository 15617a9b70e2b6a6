//! Leader election as start-up sees it: who leads, waiting as a follower until this replica does,
//! and handing the lease back only after the controllers stopped writing.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::servers::CachesSynced;
use crate::health::Health;
use crate::leader::{self, Leadership, LeaseSettings};

pub(super) struct Election {
    pub(super) leadership: Leadership,
    /// None without leader election: this replica always leads.
    task: Option<JoinHandle<leader::Ended>>,
    /// Namespace and name of this replica's pod, which carries the leader label.
    own_pod: Option<(String, String)>,
    release: CancellationToken,
}

impl Election {
    pub(super) fn start(
        client: &kube::Client,
        lease: Option<LeaseSettings>,
        pod_name: Option<&String>,
    ) -> Self {
        let release = CancellationToken::new();
        let Some(settings) = lease else {
            return Self {
                leadership: Leadership::always(),
                task: None,
                own_pod: None,
                release,
            };
        };
        let own_pod = pod_name.map(|pod| (settings.namespace.clone(), pod.clone()));
        let (leadership, task) = leader::start(client.clone(), settings, release.clone());
        Self {
            leadership,
            task: Some(task),
            own_pod,
            release,
        }
    }

    /// Waits until this replica leads, at once without election; false if stopped first.
    pub(super) async fn wait_to_lead(
        &self,
        client: &kube::Client,
        caches_synced: &CachesSynced,
        health: &Arc<Health>,
        shutdown: &CancellationToken,
    ) -> bool {
        if self.task.is_none() {
            return true;
        }
        // A label left by this pod's previous run would route heartbeats to a follower.
        self.mark_own_pod(client, false).await;
        // A follower is ready once its caches are: it can take over at once.
        let (synced, ready) = (caches_synced.clone(), health.clone());
        tokio::spawn(async move {
            synced.await;
            ready.set_synced(true);
        });
        let mut waiting = self.leadership.clone();
        tokio::select! {
            _ = waiting.acquired() => {}
            _ = shutdown.cancelled() => return false,
        }
        self.mark_own_pod(client, true).await;
        true
    }

    async fn mark_own_pod(&self, client: &kube::Client, leading: bool) {
        if let Some((namespace, pod)) = &self.own_pod {
            leader::mark_own_pod(client.clone(), namespace, pod, leading).await;
        }
    }

    /// Completes when this replica loses the lease; never without election.
    pub(super) async fn lost(&self) {
        if self.task.is_none() {
            return std::future::pending().await;
        }
        let mut losing = self.leadership.clone();
        losing.lost().await;
    }

    pub(super) fn release_lease(&self) {
        self.release.cancel();
    }

    /// Waits for the election to hand the lease back.
    pub(super) async fn ended(self) {
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
