//! Sessions that outlive their worker (`spec.sessions.persistence` of the pool): a session whose
//! worker is lost goes back to Pending with its token, and the binding to a new worker restores
//! the latest checkpoint there. The move is recorded in `status.migrations` and
//! `status.lastMigration`. See docs/checkpoints.md.

use std::time::Duration;

use capsule_crds::{CapsulePool, CapsuleSession, SessionMigration, SessionPhase};
use capsule_protocol::admin::{AdminError, WorkerClient};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, warn};

use super::release::release;
use super::status::{bound_status, event, fail, status_with, write_status};
use super::{pool_labels, BOUND_CHECK, WAIT_POLL};
use crate::conditions::DesiredCondition;
use crate::context::Context;
use crate::error::Result;

/// How long the new worker may take to restore a checkpoint (a large one is read, checked,
/// decompressed and loaded).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a bound session lost its worker.
pub(super) struct Loss {
    /// A word: WorkerGone, WorkerUnbound, WorkerDeleting, WorkerFailed, WorkerSilent or
    /// WorkerRestarted.
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// Whether the session is between losing a worker and restoring on a new one.
pub(super) fn under_way(session: &CapsuleSession) -> Option<&SessionMigration> {
    session
        .status
        .as_ref()?
        .last_migration
        .as_ref()
        .filter(|m| m.restored_at.is_none())
}

/// Milliseconds since the move started, which the acquire timeout counts for a moving session.
pub(super) fn waited_ms(migration: &SessionMigration) -> i64 {
    Timestamp::now()
        .duration_since(migration.started_at.0)
        .as_millis()
        .max(0) as i64
}

/// Detaches the session from its lost worker and sends it back to Pending, where acquisition
/// binds a new worker with the same token. The worker is detached first: a Pending session that
/// still labels its old worker would bind to it again.
pub(super) async fn start(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    pool: &CapsulePool,
    from_worker: &str,
    loss: Loss,
) -> Result<Action> {
    release(ctx, session, ns).await?;
    let message = format!(
        "{}: moving the session to a new worker of pool {}, restoring its latest checkpoint",
        loss.message,
        pool.name_any()
    );
    let mut status = status_with(
        session,
        SessionPhase::Pending,
        DesiredCondition::new("Bound", false, "Migrating", message.clone()),
    );
    status.worker = None;
    status.endpoint = None;
    status.migrations += 1;
    status.last_migration = Some(SessionMigration {
        reason: loss.reason.into(),
        message: loss.message,
        from_worker: from_worker.into(),
        started_at: Time(Timestamp::now()),
        to_worker: None,
        checkpoint: None,
        restored_at: None,
    });
    write_status(ctx, session, status).await?;
    event(ctx, session, EventType::Warning, "Migrating", message).await;
    Ok(Action::requeue(WAIT_POLL))
}

/// What restoring on the new worker came to.
pub(super) enum Restore {
    /// The checkpoint with this id is loaded.
    Restored(String),
    /// The session had no checkpoint: it goes on with a fresh namespace.
    NoCheckpoint,
    /// The worker refused the checkpoint (corrupt, too large): the state cannot come back.
    Refused(String),
    /// The worker did not answer; the next pass tries again.
    Unreachable(String),
}

/// Asks the newly bound worker to restore the session's latest checkpoint.
pub(super) async fn restore(ctx: &Context, url: &str, credential: String) -> Restore {
    let client = WorkerClient::new(ctx.http.clone(), url, credential).with_timeout(RESTORE_TIMEOUT);
    match client.restore_checkpoint("latest").await {
        Ok(restored) => Restore::Restored(restored.id),
        Err(error) if error.status() == Some(404) => Restore::NoCheckpoint,
        Err(error @ AdminError::Refused { .. }) => Restore::Refused(error.to_string()),
        Err(error) => Restore::Unreachable(error.to_string()),
    }
}

/// The finished move, for the status and the event.
pub(super) fn finished(
    migration: &SessionMigration,
    to_worker: &str,
    restore: &Restore,
) -> (SessionMigration, String) {
    let mut done = migration.clone();
    done.to_worker = Some(to_worker.into());
    done.restored_at = Some(Time(Timestamp::now()));
    let what = match restore {
        Restore::Restored(id) => {
            done.checkpoint = Some(id.clone());
            format!("restored checkpoint {id}")
        }
        _ => "no checkpoint had been taken: the session goes on with a fresh namespace".into(),
    };
    let message = format!(
        "moved from worker {} to {to_worker}: {what}",
        migration.from_worker
    );
    info!(from = %migration.from_worker, to = %to_worker, "session migrated");
    (done, message)
}

/// Completes a move on the newly bound worker `pod`: restores the latest checkpoint there and
/// records the move. A refused checkpoint fails the session (`RestoreFailed`; the final phase
/// releases the new worker); an unanswered call is retried by the next pass.
pub(super) async fn finish(
    ctx: &Context,
    session: &CapsuleSession,
    pod: &Pod,
    url: String,
    credential: Option<String>,
    moving: &SessionMigration,
) -> Result<Action> {
    let Some(credential) = credential else {
        return Ok(Action::requeue(WAIT_POLL));
    };
    let to_worker = pod.name_any();
    let restored = restore(ctx, &url, credential).await;
    match &restored {
        Restore::Unreachable(reason) => {
            warn!(%reason, worker = %to_worker, "restoring the session's checkpoint failed; retrying");
            return Ok(Action::requeue(WAIT_POLL));
        }
        Restore::Refused(reason) => {
            let message = format!(
                "moving to worker {to_worker}: the checkpoint could not be restored: {reason}"
            );
            return fail(ctx, session, "RestoreFailed", message).await;
        }
        Restore::Restored(_) | Restore::NoCheckpoint => {}
    }
    let (done, message) = finished(moving, &to_worker, &restored);
    let ready = DesiredCondition::new("Bound", true, "Migrated", message.clone());
    let mut status = bound_status(ctx, session, to_worker, url, ready);
    status.last_migration = Some(done);
    write_status(ctx, session, status).await?;
    let ns = session.namespace().unwrap_or_default();
    ctx.metrics
        .session_migrations
        .get_or_create(&pool_labels(&ns, &session.spec.pool))
        .inc();
    event(ctx, session, EventType::Normal, "Migrated", message).await;
    Ok(Action::requeue(BOUND_CHECK))
}
