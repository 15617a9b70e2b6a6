//! A bound session's periodic check: a lost worker fails or moves the session, an idle timeout
//! releases it, and otherwise the live view from the worker's heartbeats is refreshed.

use std::time::Instant;

use capsule_crds::{CapsulePool, CapsuleSession, SessionPhase, WorkerPhase};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::release::release;
use super::status::{ended_status, event, fail, write_status};
use super::{info, migrate, BOUND_CHECK};
use crate::context::Context;
use crate::error::Result;
use crate::labels;
use crate::pool::{checkpoint_store, plan};
use crate::relay::index::WorkerRecord;

pub(super) async fn check_bound(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
) -> Result<Action> {
    let worker = bound_worker(session);
    let pod = bound_pod(ctx, ns, &worker, &session.name_any()).await?;
    let pool = super::pool_of(ctx, ns, &session.spec.pool).await?;
    // One read of the worker's record serves staleness, restarts, the idle timeout and the view.
    let record = ctx.index.get(ns, &worker);
    let now = Instant::now();
    if let Some(loss) = worker_loss(session, pod.as_ref(), pool.as_ref(), record.as_ref(), now) {
        return lose_worker(ctx, session, ns, pool.as_ref(), &worker, loss).await;
    }
    let idle = pool.as_ref().zip(record.as_ref());
    if let Some(message) = idle.and_then(|(pool, record)| idle_expired(pool, record, now)) {
        return release_idle(ctx, session, ns, message).await;
    }
    if let Some(record) = &record {
        refresh_info(ctx, session, record).await?;
    }
    Ok(Action::requeue(BOUND_CHECK))
}

/// The worker from the pod cache when the cache shows it serving this session; otherwise read,
/// since a cache behind the binding must not pass for a lost worker.
async fn bound_pod(ctx: &Context, ns: &str, worker: &str, session: &str) -> Result<Option<Pod>> {
    let cached = ctx
        .directory
        .as_ref()
        .and_then(|d| d.cached_pod(ns, worker));
    let serving = |pod: &Pod| {
        pod.labels().get(labels::SESSION).map(String::as_str) == Some(session)
            && pod.metadata.deletion_timestamp.is_none()
    };
    match cached {
        Some(pod) if serving(&pod) => Ok(Some(pod)),
        _ => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            Ok(pods.get_opt(worker).await?)
        }
    }
}

fn bound_worker(session: &CapsuleSession) -> String {
    session
        .status
        .as_ref()
        .and_then(|s| s.worker.clone())
        .unwrap_or_default()
}

/// Why the bound session's worker can no longer serve it, if it cannot.
fn worker_loss(
    session: &CapsuleSession,
    pod: Option<&Pod>,
    pool: Option<&CapsulePool>,
    record: Option<&WorkerRecord>,
    now: Instant,
) -> Option<migrate::Loss> {
    let name = session.name_any();
    let worker = bound_worker(session);
    let loss = |reason, message: String| Some(migrate::Loss { reason, message });
    let Some(pod) = pod else {
        return loss("WorkerGone", format!("worker {worker} is gone"));
    };
    if pod.labels().get(labels::SESSION) != Some(&name) {
        let message = format!("worker {worker} is no longer bound to this session");
        return loss("WorkerUnbound", message);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return loss(
            "WorkerDeleting",
            format!("worker {worker} is being deleted"),
        );
    }
    if plan::classify(pod) == WorkerPhase::Unhealthy {
        return loss("WorkerFailed", format!("worker {worker} failed"));
    }
    let stale = pool.zip(record).is_some_and(|(pool, r)| {
        now.saturating_duration_since(r.last_seen).as_secs()
            > pool.spec.heartbeat.staleness_seconds as u64
    });
    if stale {
        let message = format!("worker {worker} stopped sending heartbeats");
        return loss("WorkerSilent", message);
    }
    if record.is_some_and(|r| r.lost_session) {
        let message = format!("worker {worker} restarted: the session's namespace is lost");
        return loss("WorkerRestarted", message);
    }
    None
}

/// Moves the session to a new worker when its pool keeps sessions across workers; fails it
/// otherwise.
async fn lose_worker(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    pool: Option<&CapsulePool>,
    worker: &str,
    loss: migrate::Loss,
) -> Result<Action> {
    match pool.filter(|p| checkpoint_store::sessions_migrate(p)) {
        Some(pool) => migrate::start(ctx, session, ns, pool, worker, loss).await,
        None => fail(ctx, session, "WorkerLost", loss.message).await,
    }
}

/// Why the session is released for idleness: no execution for the pool's
/// `spec.sessions.idleTimeoutSeconds` (0 turns the timeout off).
fn idle_expired(pool: &CapsulePool, record: &WorkerRecord, now: Instant) -> Option<String> {
    let timeout = pool.spec.sessions.idle_timeout_seconds;
    let idle_for = now.saturating_duration_since(record.last_activity);
    (timeout > 0 && idle_for.as_secs() as i64 >= timeout).then(|| {
        format!(
            "no execution for {timeout}s (spec.sessions.idleTimeoutSeconds of pool {})",
            pool.name_any()
        )
    })
}

async fn release_idle(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    message: String,
) -> Result<Action> {
    let released = ended_status(session, SessionPhase::Released, "IdleTimeout", &message);
    // Status first: an operator killed before the release below finishes it in the Released
    // phase's pass, whereas a release first would leave a Bound session without its worker, to be
    // failed as WorkerLost.
    write_status(ctx, session, released).await?;
    release(ctx, session, ns).await?;
    event(ctx, session, EventType::Normal, "Released", message).await;
    Ok(Action::await_change())
}

/// Writes the session's live view when it changed, at most once per status interval.
async fn refresh_info(
    ctx: &Context,
    session: &CapsuleSession,
    record: &WorkerRecord,
) -> Result<()> {
    let fresh = info::live_view(record);
    let mut status = session.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if !info::due(
        status.info.as_ref(),
        &fresh,
        now,
        ctx.config.status_interval,
    ) {
        return Ok(());
    }
    status.info = Some(capsule_crds::SessionInfo {
        observed_at: Some(Time(now)),
        ..fresh
    });
    write_status(ctx, session, status).await
}
