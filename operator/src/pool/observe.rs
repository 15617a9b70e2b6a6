//! The observe step: the pool's pods from the cache or a fresh list (adopting orphans), each one's
//! heartbeat record from the relay's index, and what phase each worker is in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::plan::{self, ClassifiedPod};
use super::{signals, worker_pod, Pass};
use crate::context::Context;
use crate::error::Result;
use crate::labels;
use crate::relay::index::WorkerRecord;
use crate::watch_cache::Listing;

/// The longest a pool pass waits for the session cache's first list before planning without it.
const SESSION_CACHE_WAIT: Duration = Duration::from_secs(10);

/// What the later steps know of the pool's workers.
pub(super) struct Seen<'a> {
    pub(super) pods: &'a [Pod],
    /// One read of the index per worker serves both the health signals and the status.
    pub(super) records: BTreeMap<String, WorkerRecord>,
    pub(super) workers: Vec<ClassifiedPod<'a>>,
    /// When the pods were observed; every step measures ages and delays from it.
    pub(super) now: Instant,
}

/// Whether the pass may go on to plan: false when the operator shuts down before the session
/// cache listed once.
pub(super) async fn session_cache_ready(ctx: &Context) -> bool {
    // Until the session cache has listed once (just after a start or a takeover) the pool cannot
    // tell sessions waiting for a worker from none, and would remove the workers started for them.
    // Waited for before the pods are listed, so the plan works on a fresh list.
    let Some(sessions) = ctx.sessions.as_ref() else {
        return true;
    };
    match sessions.wait_listed(SESSION_CACHE_WAIT).await {
        Listing::Listed => true,
        Listing::TimedOut => {
            warn!("session cache not listed yet: planning without waiting sessions");
            true
        }
        // Shutting down: a plan without the waiting sessions could remove their workers.
        Listing::WatchEnded => false,
    }
}

/// The pool's pods: from the pod cache when it shows every write this process made to them (so a
/// pod just created is never created twice), else read fresh from the API server.
pub(super) async fn pods(pass: &Pass<'_>) -> Result<Vec<Pod>> {
    let api: Api<Pod> = pass.api();
    let listed = match cached_pods(pass) {
        Some(cached) => cached,
        None => fresh_pods(pass, &api).await?,
    };
    let uid = pass.pool.uid().unwrap_or_default();
    let mut pods = Vec::with_capacity(listed.len());
    for pod in listed {
        match worker_pod::controller_uid(&pod) {
            Some(owner) if owner == uid => pods.push(pod),
            // An older pool of the same name owns it; the garbage collector removes it.
            Some(_) => {}
            None => pods.push(adopt(pass, &api, pod).await?),
        }
    }
    Ok(pods)
}

/// The pool's pods in the cache, if it is listed and shows every write to them.
fn cached_pods(pass: &Pass<'_>) -> Option<Vec<Pod>> {
    let cached = pass
        .ctx
        .directory
        .as_ref()?
        .pool_pods(pass.namespace(), pass.name())?;
    pass.ctx
        .ledger
        .cache_shows_writes(&pass.key, &cached)
        .then_some(cached)
}

async fn fresh_pods(pass: &Pass<'_>, api: &Api<Pod>) -> Result<Vec<Pod>> {
    let listed = api
        .list(&ListParams::default().labels(&labels::pool_selector(pass.name())))
        .await?
        .items;
    let now = Instant::now();
    pass.with_state(|s| s.pod_writes.rebase(&listed, now));
    Ok(listed)
}

/// Takes ownership of a pod that carries the pool's label but no controller (for example one whose
/// owner reference was stripped), the way a ReplicaSet adopts its pods.
async fn adopt(pass: &Pass<'_>, pods: &Api<Pod>, pod: Pod) -> Result<Pod> {
    let owner: OwnerReference = pass
        .pool
        .controller_owner_ref(&())
        .expect("a stored pool has a uid");
    let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
    owners.push(owner);
    let patch = json!({"metadata": {"ownerReferences": owners, "uid": pod.uid()}});
    info!(pod = %pod.name_any(), "adopting orphaned worker");
    let adopted = pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
    pass.ctx.pod_written(&pass.key, &adopted);
    Ok(adopted?)
}

/// Classifies the pods from their heartbeat records, and retires the records of pods gone.
pub(super) fn classify<'a>(pass: &Pass<'_>, pods: &'a [Pod]) -> Seen<'a> {
    let now = Instant::now();
    let (ctx, namespace) = (pass.ctx, pass.namespace());
    let records: BTreeMap<String, WorkerRecord> = pods
        .iter()
        .filter_map(|p| {
            ctx.index
                .get(namespace, &p.name_any())
                .map(|r| (p.name_any(), r))
        })
        .collect();
    let signals =
        |pod: &Pod| signals::worker_signals(ctx, pass.pool, pod, records.get(&pod.name_any()), now);
    let workers = plan::classify_all(pass.pool, pods, &signals);
    let live: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    ctx.index.retire_missing(namespace, pass.name(), &live);
    Seen {
        pods,
        records,
        workers,
        now,
    }
}
