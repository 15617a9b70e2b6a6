//! The pool controller's run loop: the watches that wake a pool (the pool itself, its pods, the
//! sessions waiting for it) and the session cache pools count waiting sessions from.

use std::sync::Arc;

use capsule_crds::{CapsulePool, CapsuleSession};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::Controller;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::warn;

use super::spec_changes::spec_changes;
use super::waiting_sessions::waits_for_new_worker;
use super::{error_policy, forget, reconcile};
use crate::context::Context;
use crate::labels;
use crate::watch_cache::{
    reflect, reflect_grouped, scoped_api, without_managed_fields, GroupedCache, WatchCache,
};

/// Session changes the pool controller has not taken yet; a full buffer pauses the session watch.
const SESSION_TRIGGER_BUFFER: usize = 256;

/// Feeds the session cache's changes to the pool controller until it stops listening. Watch
/// errors are logged here and retried with backoff, not passed on.
async fn forward_sessions(
    events: impl futures::Stream<Item = watcher::Result<CapsuleSession>> + Send + 'static,
    mut trigger: futures::channel::mpsc::Sender<CapsuleSession>,
) {
    use futures::SinkExt;
    let mut events = std::pin::pin!(events);
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

/// A watch whose cache goes into the [`Context`] and whose events go to [`run`] (in [`Triggers`]),
/// which drives it: it costs nothing until this replica leads.
pub type Watch<K> = (WatchCache<K>, BoxStream<'static, watcher::Result<K>>);

fn watch<K>(client: kube::Client, namespace: Option<&str>, config: watcher::Config) -> Watch<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let (cache, events) = reflect(watch_events(scoped_api(client, namespace), config));
    (cache, events.boxed())
}

fn watch_events<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .modify(without_managed_fields)
}

/// The pool watch: it wakes the pool controller, and sessions read their pool from its cache.
pub fn pool_watch(client: kube::Client, namespace: Option<&str>) -> Watch<CapsulePool> {
    watch(client, namespace, watcher::Config::default())
}

/// The session watch: pools count the sessions waiting on them from its cache, grouped by pool.
pub fn session_watch(
    client: kube::Client,
    namespace: Option<&str>,
) -> (
    GroupedCache<CapsuleSession>,
    BoxStream<'static, watcher::Result<CapsuleSession>>,
) {
    let events = watch_events(scoped_api(client, namespace), watcher::Config::default());
    let (cache, events) = reflect_grouped(events, session_pool);
    (cache, events.boxed())
}

/// The key the session cache groups by: the pool a session claims from.
pub fn session_pool(session: &CapsuleSession) -> Option<String> {
    Some(session.spec.pool.clone())
}

/// The watch of the pools' NetworkPolicies: a pass reads its pool's from the cache, and a change
/// made by anyone else wakes the pool to put it back.
pub fn network_policy_watch(client: kube::Client, namespace: Option<&str>) -> Watch<NetworkPolicy> {
    let managed = watcher::Config::default().labels(&labels::managed_selector());
    watch(client, namespace, managed)
}

/// What wakes a pool besides its own changes, each from a cache in the [`Context`]: the session
/// cache's changes (see [`session_watch`]) and the pod cache's, so a pass woken by a change reads
/// at least that change from the cache.
pub struct Triggers {
    /// The pool cache's changes.
    pub pools: BoxStream<'static, watcher::Result<CapsulePool>>,
    pub sessions: BoxStream<'static, watcher::Result<CapsuleSession>>,
    pub pods: BoxStream<'static, Pod>,
    pub network_policies: BoxStream<'static, watcher::Result<NetworkPolicy>>,
}

/// Runs the pool controller until `shutdown` resolves. Marks readiness once its watches synced.
pub async fn run(
    ctx: Arc<Context>,
    triggers: Triggers,
    caches_synced: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pool_cache = ctx
        .pools
        .clone()
        .expect("start-up gives the pool controller its pool cache");
    // The pool counts waiting sessions from the same watch that wakes it: a session that missed
    // is in the cache before its event starts the pass that creates the worker it waits for.
    // Driven by its own task with its own backoff: an error on the pool or pod watch pauses the
    // controller's triggers, and must not pause the cache the pool counts waiting sessions from.
    let (session_tx, session_rx) = futures::channel::mpsc::channel(SESSION_TRIGGER_BUFFER);
    tokio::spawn(forward_sessions(triggers.sessions, session_tx));
    let pool_events = spec_changes(triggers.pools, pool_cache.store().clone());
    let controller = Controller::for_stream(pool_events, pool_cache.store().clone())
        .owns_stream(triggers.pods.map(Ok))
        .owns_stream(triggers.network_policies)
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
