//! The CapsulePool controller: keeps each pool's warm workers at its target and reports status.
//! Each pass runs in named steps, each in its own file: observe → plan → apply → report.

mod apply;
pub mod checkpoint_store;
mod controller;
mod counters;
mod events;
pub mod expectations;
pub mod network_policy;
pub mod new_worker;
mod observe;
mod orphaned_bindings;
mod pass;
pub mod plan;
mod plan_step;
pub mod pod_security;
mod report;
pub mod restored_totals;
pub mod scale_down;
mod signals;
mod spec_changes;
pub mod spec_check;
pub mod status;
mod status_write;
pub mod token;
mod waiting_sessions;
pub mod warmup_failing;
pub mod worker_pod;

pub use controller::{
    network_policy_watch, pool_watch, run, session_pool, session_watch, Triggers, Watch,
};
pub use waiting_sessions::waits_for_new_worker;

use std::sync::Arc;
use std::time::Duration;

use capsule_crds::CapsulePool;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{instrument, warn};

use crate::context::{Context, PoolKey};
use crate::error::{backoff, Error, Result};
use crate::metrics::{ControllerName, PoolLabels};
use crate::reconcile_timer::ReconcileTimer;
use apply::Applied;
use pass::Pass;

fn key_of(pool: &CapsulePool) -> Result<PoolKey> {
    let ns = pool
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(pool.name_any()))?;
    Ok((ns, pool.name_any()))
}

fn labels_of(key: &PoolKey) -> PoolLabels {
    PoolLabels {
        namespace: key.0.clone(),
        pool: key.1.clone(),
    }
}

/// Reconciles one pool. Idempotent and level-triggered: it reads the pool's pods fresh from the API
/// server (not a cache) so a pod it just created is never created twice.
#[instrument(skip_all, fields(namespace = pool.namespace().unwrap_or_default(), pool = pool.name_any(), trace_id = tracing::field::Empty))]
pub async fn reconcile(pool: Arc<CapsulePool>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ReconcileTimer::start(&ctx.metrics, ControllerName::pool);
    let result = reconcile_inner(&pool, &ctx).await;
    drop(timer);
    if let Ok(key) = key_of(&pool) {
        ctx.ledger.update(&key, |s| {
            s.failures = if result.is_ok() { 0 } else { s.failures + 1 };
        });
    }
    result
}

async fn reconcile_inner(pool: &CapsulePool, ctx: &Context) -> Result<Action> {
    let key = key_of(pool)?;
    if pool.metadata.deletion_timestamp.is_some() {
        // Pods and the token Secret go with the pool through their owner references.
        forget(ctx, &key);
        return Ok(Action::await_change());
    }
    let pass = Pass::start(ctx, pool, key);
    if !observe::session_cache_ready(ctx).await {
        return Ok(Action::await_change());
    }
    let pool_key = ensure_pool_objects(&pass).await?;
    let pods = observe::pods(&pass).await?;
    let seen = observe::classify(&pass, &pods);
    let mut planned = plan_step::decide(&pass, &seen).await?;
    // Counted before the deletes, so a pass that fails on one still counts its health pass.
    counters::record_health(&pass, &seen.workers);
    let applied = apply::apply(&pass, &seen, &mut planned.plan, pool_key).await?;
    let status_waits_for = report::report(&pass, &seen, &planned.plan, &applied).await?;
    next_action(&pass, applied, planned.surplus_kept_for, status_waits_for)
}

/// The token Secret and NetworkPolicy every worker of a usable spec needs; returns the pool's key.
async fn ensure_pool_objects(pass: &Pass<'_>) -> Result<Option<String>> {
    if !pass.spec_usable() {
        return Ok(None);
    }
    // The Secret watch heartbeat ingest keeps saves a read per pass; a key it lacks (not listed
    // yet, or the Secret is gone) is read or made through the API.
    let (ns, pool) = &pass.key;
    let cached = pass
        .ctx
        .directory
        .as_ref()
        .and_then(|d| d.pool_key(ns, pool));
    let key = match cached.filter(|key| !key.is_empty()) {
        Some(key) => key,
        None => token::ensure(&pass.api(), pass.pool).await?,
    };
    let cached = pass.ctx.network_policies.as_ref();
    network_policy::ensure(&pass.api(), pass.pool, &pass.ctx.config, cached).await?;
    Ok(Some(key))
}

/// Fails a pass whose creations failed (status was written first); otherwise comes back after the
/// status interval, or sooner for a status write, a surplus or creations that wait.
fn next_action(
    pass: &Pass<'_>,
    applied: Applied,
    surplus_kept_for: Option<Duration>,
    status_waits_for: Option<Duration>,
) -> Result<Action> {
    if let Some(message) = applied.failure {
        return Err(Error::Config(message));
    }
    if !pass.spec_usable() && status_waits_for.is_none() {
        // Nothing to retry until the user changes the spec; the watch brings that change.
        return Ok(Action::await_change());
    }
    let next_pass = [status_waits_for, surplus_kept_for, applied.creates_held_for]
        .into_iter()
        .flatten()
        .fold(pass.ctx.config.status_interval, Duration::min);
    Ok(Action::requeue(next_pass))
}

/// Drops everything the operator keeps about a deleted pool: its state, its index entries and every
/// Prometheus series, per-worker ones included.
fn forget(ctx: &Context, key: &PoolKey) {
    ctx.ledger.forget(key);
    ctx.metrics.forget_pool(&labels_of(key));
    ctx.index.forget_pool(&key.0, &key.1);
}

/// Retry with per-pool exponential backoff.
pub fn error_policy(pool: Arc<CapsulePool>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(ControllerName::pool, error.kind());
    let failures = key_of(&pool)
        .map(|key| ctx.ledger.update(&key, |s| s.failures))
        .unwrap_or(1);
    warn!(error = %error, failures, "pool reconcile failed");
    Action::requeue(backoff(failures.saturating_sub(1)))
}
