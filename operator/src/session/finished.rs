//! A session in a final phase (Released or Failed): its worker is given back, its token Secret is
//! deleted (the token opens nothing any more), the time it finished is recorded once, and with
//! `spec.ttlSecondsAfterFinished` the session itself is deleted once that time has passed.

use std::time::Duration;

use capsule_crds::CapsuleSession;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::release::release;
use super::status::{event, write_status};
use crate::context::Context;
use crate::error::Result;
use crate::labels;

pub(super) async fn reconcile(ctx: &Context, session: &CapsuleSession, ns: &str) -> Result<Action> {
    // A release cut short (an operator killed between the status write and the release) is
    // finished here: a final session never keeps a worker.
    release(ctx, session, ns).await?;
    let status = session.status.clone().unwrap_or_default();
    let Some(finished_at) = status.finished_at.clone() else {
        delete_token_secret(ctx, session, ns).await?;
        let mut status = status;
        status.finished_at = Some(Time(Timestamp::now()));
        status.token_secret = None;
        status.gateway_url = None;
        // The status write brings the session back here, where the TTL starts counting.
        write_status(ctx, session, status).await?;
        return Ok(Action::await_change());
    };
    let Some(ttl) = session.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let age = Timestamp::now().duration_since(finished_at.0).as_secs();
    if age < ttl {
        return Ok(Action::requeue(Duration::from_secs((ttl - age) as u64)));
    }
    let message = format!("deleted {ttl}s after it finished (spec.ttlSecondsAfterFinished)");
    event(ctx, session, EventType::Normal, "Expired", message).await;
    let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), ns);
    ignore_not_found(
        sessions
            .delete(&session.name_any(), &DeleteParams::default())
            .await,
    )?;
    Ok(Action::await_change())
}

async fn delete_token_secret(ctx: &Context, session: &CapsuleSession, ns: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = labels::session_token_secret(&session.name_any());
    ignore_not_found(secrets.delete(&name, &DeleteParams::default()).await)
}

fn ignore_not_found<T>(result: kube::Result<T>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
