//! The release finalizer: stored before any worker is taken, removed once the deleted session's
//! worker is given back, so no worker outlives its session bound.

use capsule_crds::CapsuleSession;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::acquire::InFlight;
use super::pending::forget_pending;
use super::release::release;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::labels;

pub(super) fn has_finalizer(session: &CapsuleSession) -> bool {
    session
        .finalizers()
        .iter()
        .any(|f| f == labels::RELEASE_FINALIZER)
}

/// The patch adding the finalizer, still to be sent.
pub(super) fn add_finalizer<'a>(
    ctx: &'a Context,
    session: &'a CapsuleSession,
    ns: &'a str,
) -> InFlight<'a, CapsuleSession> {
    let mut finalizers = session.finalizers().to_vec();
    finalizers.push(labels::RELEASE_FINALIZER.into());
    Box::pin(set_finalizers(ctx, session, ns, finalizers))
}

/// A deleted session: its worker is given back before the finalizer goes.
pub(super) async fn on_deleted(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
) -> Result<Action> {
    forget_pending(ctx, session);
    if has_finalizer(session) {
        release(ctx, session, ns).await?;
        let remaining = session
            .finalizers()
            .iter()
            .filter(|f| *f != labels::RELEASE_FINALIZER)
            .cloned()
            .collect();
        set_finalizers(ctx, session, ns, remaining).await?;
    }
    Ok(Action::await_change())
}

/// Replaces the session's finalizers, only if the session did not change since it was read.
async fn set_finalizers(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    finalizers: Vec<String>,
) -> Result<CapsuleSession> {
    let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": session.resource_version()}});
    sessions
        .patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::from)
}
