//! Watch caches of the operator's own Secrets and worker pods, which heartbeat ingest reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::directory::{Directory, StoreDirectory};
use crate::labels;
use crate::watch_cache::scoped_api;

/// Starts the caches; returns the directory over them and a future that resolves once both have
/// listed everything once.
pub fn start(
    client: Client,
    namespace: Option<String>,
    shutdown: CancellationToken,
) -> (
    Arc<dyn Directory>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGER);
    let config = watcher::Config::default().labels(&selector);
    let secrets_api: Api<Secret> = scoped_api(client.clone(), namespace.as_deref());
    let pods_api: Api<Pod> = scoped_api(client, namespace.as_deref());
    let (secrets, secrets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let secret_stream = watcher(secrets_api, config.clone())
        .default_backoff()
        .reflect(secrets_writer)
        .for_each(|_| futures::future::ready(()));
    let pod_stream = watcher(pods_api, config)
        .default_backoff()
        .reflect(pods_writer)
        .for_each(|_| futures::future::ready(()));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = secret_stream => {}, _ = stop.cancelled() => {} }
    });
    tokio::spawn(async move {
        tokio::select! { _ = pod_stream => {}, _ = shutdown.cancelled() => {} }
    });
    let (secrets_ready, pods_ready) = (secrets.clone(), pods.clone());
    let pods_listed = Arc::new(AtomicBool::new(false));
    let listed = pods_listed.clone();
    // The store's own readiness keeps one waker: only this future waits on it, and the flag tells
    // every reader.
    let synced = async move {
        let _ = secrets_ready.wait_until_ready().await;
        tracing::debug!("secret cache synced");
        let _ = pods_ready.wait_until_ready().await;
        listed.store(true, Ordering::Release);
        tracing::debug!("pod cache synced");
    };
    let directory = StoreDirectory {
        secrets,
        pods,
        pods_listed,
    };
    (Arc::new(directory), synced)
}
