//! Watch caches of the operator's own Secrets and worker pods, which heartbeat ingest reads and
//! the controllers plan from; the pod watch also wakes both controllers.

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::directory::{Directory, StoreDirectory};
use super::pod_trim::trim_pod;
use crate::labels;
use crate::watch_cache::{reflect_grouped, scoped_api, without_managed_fields};

/// Pod changes a controller has not taken yet; a full buffer pauses the pod watch.
const POD_TRIGGER_BUFFER: usize = 1024;

/// Hands the pod watch's changes to the controllers while they run (this replica leads).
/// Without one they are not kept: a controller that starts passes over every object anyway.
#[derive(Clone, Default)]
pub struct PodTriggers {
    subscribers: Arc<Mutex<Vec<mpsc::Sender<Pod>>>>,
}

impl PodTriggers {
    /// The pod changes from now on, each in the cache before it is yielded.
    pub fn subscribe(&self) -> impl Stream<Item = Pod> + Send + 'static {
        let (tx, rx) = mpsc::channel(POD_TRIGGER_BUFFER);
        self.subscribers.lock().expect("pod triggers").push(tx);
        rx
    }

    async fn forward(&self, pod: Pod) {
        let subscribers = self.subscribers.lock().expect("pod triggers").clone();
        let mut gone = false;
        for mut tx in subscribers {
            gone |= tx.send(pod.clone()).await.is_err();
        }
        if gone {
            let mut subscribers = self.subscribers.lock().expect("pod triggers");
            subscribers.retain(|tx| !tx.is_closed());
        }
    }
}

/// The key the pod cache groups by: the pool a pod's label names.
pub fn pod_pool(pod: &Pod) -> Option<String> {
    pod.labels().get(labels::POOL).cloned()
}

/// The relay's caches as start-up hands them on.
pub struct Caches {
    pub directory: Arc<dyn Directory>,
    /// Resolves once both caches have listed everything once.
    pub synced: futures::future::BoxFuture<'static, ()>,
    pub pod_triggers: PodTriggers,
}

/// Starts the caches; they run until `shutdown`.
pub fn start(client: Client, namespace: Option<String>, shutdown: CancellationToken) -> Caches {
    let config = watcher::Config::default().labels(&labels::managed_selector());
    let secrets_api: Api<Secret> = scoped_api(client.clone(), namespace.as_deref());
    let pods_api: Api<Pod> = scoped_api(client, namespace.as_deref());
    let (secrets, secrets_writer) = reflector::store();
    let secret_stream = watcher(secrets_api, config.clone())
        .default_backoff()
        .modify(without_managed_fields)
        .reflect(secrets_writer)
        .for_each(|_| futures::future::ready(()));
    let pod_events = watcher(pods_api, config).default_backoff().modify(trim_pod);
    let (pods, touched_pods) = reflect_grouped(pod_events, pod_pool);
    let pod_triggers = PodTriggers::default();
    let triggers = pod_triggers.clone();
    let pod_stream = touched_pods.for_each(move |touched| {
        let triggers = triggers.clone();
        async move {
            match touched {
                Ok(pod) => triggers.forward(pod).await,
                Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
            }
        }
    });
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = secret_stream => {}, _ = stop.cancelled() => {} }
    });
    tokio::spawn(async move {
        tokio::select! { _ = pod_stream => {}, _ = shutdown.cancelled() => {} }
    });
    let (secrets_ready, pods_ready) = (secrets.clone(), pods.clone());
    // The store's own readiness keeps one waker: only this future waits on it.
    let synced = async move {
        let _ = secrets_ready.wait_until_ready().await;
        tracing::debug!("secret cache synced");
        pods_ready.listed().await;
        tracing::debug!("pod cache synced");
    };
    Caches {
        directory: Arc::new(StoreDirectory::new(secrets, pods)),
        synced: synced.boxed(),
        pod_triggers,
    }
}
