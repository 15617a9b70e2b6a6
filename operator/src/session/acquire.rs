//! Choosing a worker for a pending session: one round of reads, then either the binding an earlier
//! pass started, or a compare-and-swap on the oldest idle, recently heard-from worker.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use capsule_crds::{CapsulePool, CapsuleSession, CapsuleSessionStatus, SessionPhase, WorkerPhase};
use capsule_protocol::heartbeat::WorkerState;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::bind::finish_binding;
use super::token::ensure_token;
use super::{wait, BOUND_CHECK};
use crate::context::Context;
use crate::error::Result;
use crate::labels;
use crate::pool::plan;

/// A request still to be awaited, such as the finalizer patch that runs alongside the reads.
pub(super) type InFlight<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What one pass reads before it binds.
struct Observed {
    pool: CapsulePool,
    workers: Vec<Pod>,
    /// `workers` came from the pod cache, which may lag behind the API server.
    cached: bool,
    token_hash: String,
}

pub(super) async fn acquire(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    add_finalizer: Option<InFlight<'_, CapsuleSession>>,
) -> Result<Action> {
    // The first pass that sees the session pending: it counts one acquisition attempt.
    let first_pass = session.status.as_ref().is_none_or(first_look_at_pool);
    let Some(mut seen) = observe(ctx, session, ns, add_finalizer, first_pass).await? else {
        return wait::pool_missing(ctx, session, ns).await;
    };
    let key = (ns.to_string(), session.spec.pool.clone());
    ctx.ledger.open(&key, &seen.pool);

    // Only a warm hit is decided on the pod cache. A worker of the session's own, and a miss, are
    // confirmed on a fresh list: the cache may be behind a label, a deletion or a worker that
    // turned idle.
    loop {
        match own_worker(ctx, ns, &seen, session) {
            Some(pod) if !seen.cached => {
                return resume_binding(ctx, session, ns, &seen, pod.clone()).await;
            }
            Some(_) => {}
            None => {
                let candidates = idle_candidates(ctx, ns, &seen.pool, &seen.workers);
                let hash = &seen.token_hash;
                if let Some(bound) = take_worker(ctx, session, ns, candidates, hash).await? {
                    return finish_binding(ctx, session, &seen.pool, bound, first_pass, hash).await;
                }
                if !seen.cached {
                    return wait::on_miss(ctx, session, &seen.pool, &seen.workers, first_pass)
                        .await;
                }
            }
        }
        seen.workers = list_pods(ctx, ns, &session.spec.pool).await?;
        seen.cached = false;
    }
}

/// The pool's pods, read fresh from the API server.
async fn list_pods(ctx: &Context, ns: &str, pool: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = labels::pool_selector(pool);
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Every read the binding needs goes out at once; each is one round trip to the API server.
/// `None` when the pool does not exist.
async fn observe(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    add_finalizer: Option<InFlight<'_, CapsuleSession>>,
    first_pass: bool,
) -> Result<Option<Observed>> {
    let pool_name = &session.spec.pool;
    let finalizer = async {
        match add_finalizer {
            Some(patch) => patch.await.map(Some),
            None => Ok(None),
        }
    };
    // The pod cache saves a list per pass; the compare-and-swap on the pod and the claims keep
    // a stale copy from taking a worker twice.
    let cached = ctx
        .directory
        .as_ref()
        .and_then(|d| d.pool_pods(ns, pool_name));
    let listed = async {
        match cached {
            Some(pods) => Ok((pods, true)),
            None => list_pods(ctx, ns, pool_name)
                .await
                .map(|pods| (pods, false)),
        }
    };
    let (finalizer, pool, listed, token) = tokio::join!(
        finalizer,
        super::pool_of(ctx, ns, pool_name),
        listed,
        ensure_token(ctx, session, ns, first_pass),
    );
    // No worker is taken before the finalizer that releases it is stored.
    finalizer?;
    let token_hash = token?.1;
    let (workers, cached) = listed?;
    Ok(pool?.map(|pool| Observed {
        pool,
        workers,
        cached,
        token_hash,
    }))
}

/// The worker an earlier pass (or an earlier operator) labelled for this session; from a cached
/// list also one this process took for it, which the cache may not show labelled yet. A worker
/// being deleted is lost, not a binding to finish (a moving session left it).
fn own_worker<'a>(
    ctx: &Context,
    ns: &str,
    seen: &'a Observed,
    session: &CapsuleSession,
) -> Option<&'a Pod> {
    let (name, uid) = (session.name_any(), claim_id(session));
    let now = Instant::now();
    seen.workers.iter().find(|p| {
        let labelled = p.labels().get(labels::SESSION) == Some(&name);
        let taken = || seen.cached && ctx.claims.taken_by(ns, &p.name_any(), &uid, now);
        (labelled || taken()) && p.metadata.deletion_timestamp.is_none()
    })
}

/// Who a claim names: the session's uid (its name when a test object has none).
fn claim_id(session: &CapsuleSession) -> String {
    session
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| session.name_any())
}

/// Finishes a binding an earlier pass started.
async fn resume_binding(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    seen: &Observed,
    pod: Pod,
) -> Result<Action> {
    // The cached session may predate that pass's status write: read it fresh, so a binding
    // already recorded is neither written nor counted again.
    let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), ns);
    let Some(fresh) = sessions.get_opt(&session.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let status = fresh.status.clone().unwrap_or_default();
    if status.phase != SessionPhase::Pending {
        return Ok(Action::requeue(BOUND_CHECK));
    }
    let first_pass = first_look_at_pool(&status);
    finish_binding(ctx, &fresh, &seen.pool, pod, first_pass, &seen.token_hash).await
}

/// Idle workers that may be handed out, the most warmed-up (oldest) first: Ready ones, and ones
/// whose heartbeat announced them idle before the next readiness probe made them Ready.
fn idle_candidates<'a>(
    ctx: &Context,
    ns: &str,
    pool: &CapsulePool,
    workers: &'a [Pod],
) -> Vec<&'a Pod> {
    let staleness_seconds = pool.spec.heartbeat.staleness_seconds as u64;
    let now = Instant::now();
    let mut candidates: Vec<&Pod> = workers
        .iter()
        .filter(|p| still_free(ctx, ns, p))
        .filter(|p| {
            // A worker that has heartbeated recently; one never heard from is trusted only while the
            // operator itself is young (after a restart the index is empty for a heartbeat period).
            match ctx.index.heartbeat_age(ns, &p.name_any(), now) {
                Some(age) => age.as_secs() <= staleness_seconds,
                None => ctx.started.elapsed().as_secs() <= staleness_seconds,
            }
        })
        .collect();
    candidates.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    candidates
}

/// The worker's latest heartbeat says it is warm, idle and unbound.
fn announced_idle(ctx: &Context, ns: &str, pod: &Pod) -> bool {
    ctx.index.get(ns, &pod.name_any()).is_some_and(|r| {
        r.state == WorkerState::Idle && r.session.is_none() && r.warmup_failure.is_none()
    })
}

/// Labels the first candidate no other session takes first, with a patch carrying its
/// resourceVersion; `None` when every candidate was taken.
async fn take_worker(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    candidates: Vec<&Pod>,
    token_hash: &str,
) -> Result<Option<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let uid = claim_id(session);
    let now = Instant::now();
    let unclaimed = candidates
        .into_iter()
        .filter(|p| ctx.claims.try_claim(ns, &p.name_any(), &uid, now));
    for pod in unclaimed {
        let mut attempt = label(ctx, &pods, session, pod, token_hash).await?;
        if attempt.is_none() {
            // A 409 from a copy the cache had not updated yet, or another session won: a fresh
            // read tells which.
            attempt = match pods.get_opt(&pod.name_any()).await? {
                Some(fresh) if still_free(ctx, ns, &fresh) => {
                    label(ctx, &pods, session, &fresh, token_hash).await?
                }
                _ => None,
            };
        }
        if let Some(bound) = attempt {
            ctx.claims
                .mark_taken(ns, &pod.name_any(), &uid, Instant::now());
            return Ok(Some(bound));
        }
    }
    Ok(None)
}

/// The compare-and-swap that takes `pod` for the session; `None` on a conflict.
async fn label(
    ctx: &Context,
    pods: &Api<Pod>,
    session: &CapsuleSession,
    pod: &Pod,
    token_hash: &str,
) -> Result<Option<Pod>> {
    let patch = json!({"metadata": {
        "resourceVersion": pod.resource_version(),
        "labels": {labels::SESSION: session.name_any()},
        "annotations": {
            labels::SESSION_TOKEN_SHA256: token_hash,
            labels::SESSION_UID: session.metadata.uid,
        },
    }});
    let params = PatchParams::default();
    let outcome = pods
        .patch(&pod.name_any(), &params, &Patch::Merge(&patch))
        .await;
    let key = (
        pod.namespace().unwrap_or_default(),
        session.spec.pool.clone(),
    );
    ctx.pod_written(&key, &outcome);
    match outcome {
        Ok(bound) => Ok(Some(bound)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether a freshly read pod may still be taken.
fn still_free(ctx: &Context, ns: &str, pod: &Pod) -> bool {
    match plan::classify(pod) {
        WorkerPhase::Idle => true,
        WorkerPhase::Warming => announced_idle(ctx, ns, pod),
        _ => false,
    }
}

/// Whether no pass has looked for a worker yet: the status has no condition, or only the one that
/// says the pool was missing. Such a pass counts the acquisition attempt.
fn first_look_at_pool(status: &CapsuleSessionStatus) -> bool {
    status
        .conditions
        .iter()
        .all(|c| c.type_ == "Bound" && c.reason == "PoolNotFound")
}
