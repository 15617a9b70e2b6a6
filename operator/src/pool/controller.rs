//! The pool controller's run loop: the watches that wake a pool (the pool itself, its pods, the
//! sessions waiting for it) and the session cache pools count waiting sessions from.

use std::sync::Arc;

use capsule_crds::{CapsulePool, CapsuleSession};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::spec_changes::spec_changes;
use super::waiting_sessions::waits_for_new_worker;
use super::{error_policy, forget, reconcile};
use crate::context::Context;
use crate::labels;
use crate::watch_cache::{reflect, scoped_api};

/// Session changes the pool controller has not taken yet; a full buffer pauses the session watch.
const SESSION_TRIGGER_BUFFER: usize = 256;

/// Feeds the session cache's changes to the pool controller until it stops listening. Watch
/// errors are logged here and retried with backoff, not passed on.
async fn forward_sessions(
    events: impl futures::Stream<Item = watcher::Result<CapsuleSession>> + Send + 'static,
    mut trigger: futures::channel::mpsc::Sender<CapsuleSession>,
) {
    use futures::SinkExt;
    use kube::runtime::WatchStreamExt;
    let mut events = std::pin::pin!(events.default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(session) => {
                if trigger.send(session).await.is_err() {
                    return;
                }
            }
            Err(error) => warn!(%error, "session watch failed; retrying"),
        }
    }
}

/// The session watch: its cache goes into the [`Context`], its events to [`run`].
pub fn session_watch(
    client: kube::Client,
    namespace: Option<&str>,
) -> (
    crate::watch_cache::WatchCache<CapsuleSession>,
    futures::stream::BoxStream<'static, watcher::Result<CapsuleSession>>,
) {
    let sessions: Api<CapsuleSession> = scoped_api(client, namespace);
    let (cache, events) = reflect(watcher(sessions, watcher::Config::default()));
    (cache, events.boxed())
}

/// Runs the pool controller until `shutdown` resolves. Marks readiness once its watches synced.
/// `session_events` are those of the context's session cache (see [`session_watch`]).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    session_events: futures::stream::BoxStream<'static, watcher::Result<CapsuleSession>>,
    caches_synced: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let pools: Api<CapsulePool> = scoped_api(client.clone(), namespace.as_deref());
    let pods: Api<Pod> = scoped_api(client, namespace.as_deref());
    let pod_watch =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let (pool_cache, pool_events) = reflect(watcher(pools, watcher::Config::default()));
    // The pool counts waiting sessions from the same watch that wakes it: a session that missed
    // is in the cache before its event starts the pass that creates the worker it waits for.
    // Driven by its own task with its own backoff: an error on the pool or pod watch pauses the
    // controller's triggers, and must not pause the cache the pool counts waiting sessions from.
    let (session_tx, session_rx) = futures::channel::mpsc::channel(SESSION_TRIGGER_BUFFER);
    tokio::spawn(forward_sessions(session_events, session_tx));
    let pool_events = spec_changes(pool_events, pool_cache.store().clone());
    let controller = Controller::for_stream(pool_events, pool_cache.store().clone())
        .owns(pods, pod_watch)
        .watches_stream(session_rx.map(Ok), |session| {
            waits_for_new_worker(&session)
                .then(|| {
                    session.namespace().map(|ns| {
                        kube::runtime::reflector::ObjectRef::new(&session.spec.pool).within(&ns)
                    })
                })
                .flatten()
        });
    let health = ctx.health.clone();
    tokio::spawn(async move {
        caches_synced.await;
        tracing::debug!("secret and pod caches synced");
        if pool_cache.listed().await {
            tracing::info!("watches synced: ready");
            health.set_synced(true);
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                // kube-runtime does not reconcile an object gone from its cache: a deleted pool
                // surfaces here, and its in-memory state and series go with it.
                Err(kube::runtime::controller::Error::ObjectNotFound(gone)) => {
                    if let Some(ns) = gone.namespace.clone() {
                        forget(&ctx, &(ns, gone.name.clone()));
                    }
                }
                Err(error) => warn!(%error, "pool controller stream error"),
                Ok(_) => {}
            }
            futures::future::ready(())
        })
        .await;
}
