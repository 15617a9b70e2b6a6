//! The kubelet's pod loop: watch every pod, bind the unscheduled ones to this node (it is the only
//! node, so it is the scheduler too), start a worker for each pod bound here, and turn deletions
//! into graceful stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pod::launch::termination_grace;
use crate::pod::worker::{PodWorkerHandle, StopRequest};
use crate::Shared;

/// Bound of the worker → loop "pod finished" channel.
const FINISHED_CAPACITY: usize = 1024;

pub struct PodLoop {
    shared: Arc<Shared>,
    workers: HashMap<String, PodWorkerHandle>,
    /// Pods this loop already asked the API to remove (no worker was running them).
    removing: HashSet<String>,
    finished_tx: mpsc::Sender<String>,
    finished_rx: mpsc::Receiver<String>,
    /// UIDs seen during a relist, to stop pods that vanished while the watch was down.
    relist: Option<HashSet<String>>,
}

fn deletion_grace(pod: &Pod) -> Duration {
    match pod.metadata.deletion_grace_period_seconds {
        Some(seconds) => Duration::from_secs(seconds.max(0) as u64),
        None => pod.spec.as_ref().map(termination_grace).unwrap_or_default(),
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl PodLoop {
    pub fn new(shared: Arc<Shared>) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel(FINISHED_CAPACITY);
        PodLoop {
            shared,
            workers: HashMap::new(),
            removing: HashSet::new(),
            finished_tx,
            finished_rx,
            relist: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let pods: Api<Pod> = Api::all(self.shared.client.clone());
        let events = watcher::watcher(pods, watcher::Config::default()).default_backoff();
        futures::pin_mut!(events);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(uid) = self.finished_rx.recv() => {
                    if let Some(worker) = self.workers.remove(&uid) {
                        worker.join().await;
                    }
                }
                event = events.next() => match event {
                    Some(Ok(event)) => self.handle(event).await,
                    Some(Err(error)) => tracing::warn!(%error, "pod watch failed; retrying"),
                    None => break,
                },
            }
        }
        self.shutdown().await;
    }

    async fn handle(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relist = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (self.relist.as_mut(), pod.uid()) {
                    seen.insert(uid);
                }
                self.apply(pod).await;
            }
            Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self
                        .workers
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        if let Some(worker) = self.workers.get(&uid) {
                            worker.request_stop(StopRequest {
                                grace: Duration::ZERO,
                                delete_object: false,
                            });
                        }
                    }
                }
            }
            Event::Apply(pod) => self.apply(pod).await,
            Event::Delete(pod) => {
                // Removed without our graceful stop (forced deletion): stop it with its grace period.
                if let Some(worker) = pod.uid().and_then(|uid| self.workers.get(&uid)) {
                    worker.request_stop(StopRequest {
                        grace: deletion_grace(&pod),
                        delete_object: false,
                    });
                }
                if let Some(uid) = pod.uid() {
                    self.removing.remove(&uid);
                }
            }
        }
    }

    async fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.uid() else { return };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if node.is_empty() {
            if pod.metadata.deletion_timestamp.is_none() {
                self.bind(&pod).await;
            } else {
                self.remove_unstarted(&pod, uid).await;
            }
            return;
        }
        if node != self.shared.config.node_name {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            match self.workers.get(&uid) {
                Some(worker) => worker.request_stop(StopRequest {
                    grace: deletion_grace(&pod),
                    delete_object: true,
                }),
                None => self.remove_unstarted(&pod, uid).await,
            }
            return;
        }
        if self.workers.contains_key(&uid) || is_terminal(&pod) {
            return;
        }
        tracing::info!(pod = %crate::events::name_of(&pod), "starting pod");
        let worker = PodWorkerHandle::start(self.shared.clone(), pod, self.finished_tx.clone());
        self.workers.insert(uid, worker);
    }

    /// A deleted pod with no processes here: nothing to stop, remove the object at once.
    async fn remove_unstarted(&mut self, pod: &Pod, uid: String) {
        if !self.removing.insert(uid.clone()) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(error) = api.delete(&pod.name_any(), &params).await {
            tracing::debug!(%error, pod = %crate::events::name_of(pod), "removing pod");
        }
    }

    /// Binds through the `binding` subresource, or, when the API server lacks it, by setting
    /// `spec.nodeName` with a merge patch.
    async fn bind(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name_any()),
                namespace: pod.namespace(),
                uid: pod.uid(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.shared.config.node_name.clone()),
                ..Default::default()
            },
        };
        let bound: kube::Result<serde_json::Value> = api
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await;
        match bound {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 405) => {
                let patch =
                    serde_json::json!({ "spec": { "nodeName": self.shared.config.node_name } });
                if let Err(error) = api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(%error, pod = %crate::events::name_of(pod), "binding pod by patch failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, pod = %crate::events::name_of(pod), "binding pod failed")
            }
        }
    }

    /// Stops every pod (grace capped by the config) and waits for all of them.
    async fn shutdown(&mut self) {
        let cap = self.shared.options.shutdown_grace;
        for worker in self.workers.values() {
            worker.request_stop(StopRequest {
                grace: cap,
                delete_object: false,
            });
        }
        let workers: Vec<_> = self
            .workers
            .drain()
            .map(|(_, worker)| worker.join())
            .collect();
        futures::future::join_all(workers).await;
    }
}
