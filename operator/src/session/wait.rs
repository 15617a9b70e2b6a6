//! A pending session that got no worker on this pass: it waits (the pool controller grows the pool
//! for it) until its acquire timeout, then fails. A session whose pool is missing waits the same way.

use capsule_crds::{CapsulePool, CapsuleSession, SessionPhase, SessionPolicy};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::pending::{age_ms, mark_counted};
use super::status::{fail, status_with, write_status};
use super::{migrate, pool_labels, POOL_POLL, WAIT_POLL};
use crate::conditions::DesiredCondition;
use crate::context::Context;
use crate::error::Result;

/// A miss: no idle worker. The pool controller counts this session as waiting and grows.
pub(super) async fn on_miss(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    workers: &[Pod],
    first_pass: bool,
) -> Result<Action> {
    let moving = migrate::under_way(session);
    let waited_ms = moving.map_or_else(|| age_ms(session), migrate::waited_ms);
    if waited_ms > pool.spec.sessions.acquire_timeout_seconds * 1000 {
        return time_out(ctx, session, pool).await;
    }
    if moving.is_some() {
        // A moving session keeps its Migrating condition and was counted when first bound.
        return Ok(Action::requeue(WAIT_POLL));
    }
    let already_missed = session
        .status
        .as_ref()
        .is_some_and(|s| s.warm_hit == Some(false));
    let mut status = status_with(
        session,
        SessionPhase::Pending,
        waiting(&session.spec.pool, pool, workers),
    );
    status.warm_hit = Some(false);
    write_status(ctx, session, status).await?;
    count_miss(ctx, session, pool, first_pass, !already_missed);
    Ok(Action::requeue(WAIT_POLL))
}

/// Fails a session that waited past the pool's `spec.sessions.acquireTimeoutSeconds`.
async fn time_out(ctx: &Context, session: &CapsuleSession, pool: &CapsulePool) -> Result<Action> {
    let message = format!(
        "no worker of pool {} became free within spec.sessions.acquireTimeoutSeconds ({}s)",
        session.spec.pool, pool.spec.sessions.acquire_timeout_seconds
    );
    let action = fail(ctx, session, "AcquireTimeout", message).await?;
    let ns = session.namespace().unwrap_or_default();
    let key = (ns.clone(), session.spec.pool.clone());
    ctx.ledger.count_timeout(&key, pool);
    ctx.metrics
        .acquisition_timeouts
        .get_or_create(&pool_labels(&ns, &session.spec.pool))
        .inc();
    Ok(action)
}

/// Why the session waits: the pool is at `spec.maxWorkers`, or a new worker is on its way.
fn waiting(pool_name: &str, pool: &CapsulePool, workers: &[Pod]) -> DesiredCondition {
    let live = workers
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    if live as i32 >= pool.spec.max_workers {
        DesiredCondition::new(
            "Bound",
            false,
            "PoolExhausted",
            format!(
                "all {} workers of pool {pool_name} are in use (spec.maxWorkers): waiting for one to be released",
                pool.spec.max_workers
            ),
        )
    } else {
        DesiredCondition::new(
            "Bound",
            false,
            "WaitingForWorker",
            format!("starting a new worker in pool {pool_name}"),
        )
    }
}

/// Counts the attempt and the miss, each once per session, after the status recording them is
/// stored, so a failed write never counts twice.
fn count_miss(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    first_pass: bool,
    miss: bool,
) {
    let ns = session.namespace().unwrap_or_default();
    let key = (ns.clone(), session.spec.pool.clone());
    let (new_attempt, new_miss) = mark_counted(ctx, session, miss);
    if first_pass && new_attempt {
        ctx.ledger.count_attempt(&key, pool);
    }
    if new_miss {
        ctx.ledger.count_miss(&key, pool);
        ctx.metrics
            .misses
            .get_or_create(&pool_labels(&ns, &session.spec.pool))
            .inc();
    }
}

/// A session whose pool does not exist waits for it, up to the default acquire timeout (the
/// pool's own setting cannot be read), then fails with reason `PoolNotFound`.
pub(super) async fn pool_missing(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
) -> Result<Action> {
    let pool_name = &session.spec.pool;
    let timeout_s = SessionPolicy::default().acquire_timeout_seconds;
    if age_ms(session) > timeout_s * 1000 {
        let message = format!(
            "CapsulePool {pool_name} did not appear in namespace {ns} within {timeout_s}s (the default spec.sessions.acquireTimeoutSeconds)"
        );
        return fail(ctx, session, "PoolNotFound", message).await;
    }
    let status = status_with(
        session,
        SessionPhase::Pending,
        DesiredCondition::new(
            "Bound",
            false,
            "PoolNotFound",
            format!("CapsulePool {pool_name} does not exist in namespace {ns}: create it or fix spec.pool"),
        ),
    );
    write_status(ctx, session, status).await?;
    Ok(Action::requeue(POOL_POLL))
}
