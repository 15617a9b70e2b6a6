//! Writing a session's status and announcing what happened to it: the one place that knows how a
//! status is applied and how an ending (failure, release) is recorded.

use capsule_crds::{CapsuleSession, CapsuleSessionStatus, SessionPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::error::Result;
use crate::labels;

/// Writes the session's status with server-side apply, only when it changed.
pub(super) async fn write_status(
    ctx: &Context,
    session: &CapsuleSession,
    status: CapsuleSessionStatus,
) -> Result<()> {
    if session.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = session.namespace().unwrap_or_default();
    let api: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({"apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
                       "metadata": {"name": session.name_any()}, "status": status});
    api.patch_status(
        &session.name_any(),
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The session's current status moved to `phase`, with `ready` merged into its conditions.
pub(super) fn status_with(
    session: &CapsuleSession,
    phase: SessionPhase,
    ready: DesiredCondition,
) -> CapsuleSessionStatus {
    let mut status = session.status.clone().unwrap_or_default();
    status.phase = phase;
    status.observed_generation = session.metadata.generation;
    status.conditions = conditions::merge(
        &status.conditions,
        &[ready],
        session.metadata.generation,
        Timestamp::now(),
    );
    status
}

/// The session bound to `worker`, which the client reaches at `endpoint`.
pub(super) fn bound_status(
    ctx: &Context,
    session: &CapsuleSession,
    worker: String,
    endpoint: String,
    ready: DesiredCondition,
) -> CapsuleSessionStatus {
    let ns = session.namespace().unwrap_or_default();
    let mut status = status_with(session, SessionPhase::Bound, ready);
    status.worker = Some(worker);
    status.endpoint = Some(endpoint);
    status.bound_at = Some(Time(Timestamp::now()));
    status.gateway_url = ctx.config.session_gateway_url(&ns, &session.name_any());
    status.reason = None;
    status.message = None;
    status
}

/// The status of a session that leaves the Bound condition for `reason`: the reason and message
/// are on the condition and on the status itself.
pub(super) fn ended_status(
    session: &CapsuleSession,
    phase: SessionPhase,
    reason: &'static str,
    message: &str,
) -> CapsuleSessionStatus {
    let condition = DesiredCondition::new("Bound", false, reason, message);
    let mut status = status_with(session, phase, condition);
    status.reason = Some(reason.into());
    status.message = Some(message.into());
    status
}

/// Fails the session for `reason`, with a warning event saying why.
pub(super) async fn fail(
    ctx: &Context,
    session: &CapsuleSession,
    reason: &'static str,
    message: String,
) -> Result<Action> {
    let failed = ended_status(session, SessionPhase::Failed, reason, &message);
    write_status(ctx, session, failed).await?;
    event(ctx, session, EventType::Warning, reason, message).await;
    Ok(Action::await_change())
}

/// Publishes an event on the session; a failed publish is logged, never fails the pass.
pub(super) async fn event(
    ctx: &Context,
    session: &CapsuleSession,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &session.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}
