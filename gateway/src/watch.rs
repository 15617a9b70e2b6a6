//! Keeps the [`Index`] in step with the cluster: one watch of CapsuleSessions and one of the bound
//! worker pods (those labelled `capsule.dev/session`, so the cache grows with sessions, not pools).
//! Only get/list/watch on these two kinds are needed; no Secret is ever read.

use std::sync::Arc;

use capsule_crds::session::CapsuleSession;
use capsule_protocol::names;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tracing::warn;

use crate::index::Index;

/// Runs both watches until the process ends; each retries with backoff after an error.
pub async fn run(client: Client, namespace: Option<String>, index: Arc<Index>) {
    let (sessions, pods): (Api<CapsuleSession>, Api<Pod>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let sessions = watcher(sessions, watcher::Config::default()).default_backoff();
    let pods = watcher(pods, watcher::Config::default().labels(names::SESSION)).default_backoff();
    let session_index = index.clone();
    tokio::join!(
        drive("capsulesessions", sessions, move |e| session_index
            .apply_session(e)),
        drive("pods", pods, move |e| index.apply_pod(e)),
    );
}

async fn drive<K>(
    kind: &'static str,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
    mut apply: impl FnMut(watcher::Event<K>),
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => apply(event),
            Err(error) => warn!(kind, %error, "watch failed; retrying"),
        }
    }
}
