//! The CapsuleSession controller: binds an idle worker of the referenced pool to each session, hands
//! the client an endpoint and a token, and releases the worker when the session goes.
//!
//! Binding is a compare-and-swap on the worker pod (a patch carrying the pod's resourceVersion), so
//! two sessions can never take the same worker, even across operator restarts: a session that finds a
//! pod already labelled with its own name finishes that binding instead of taking another.

mod acquire;
mod bind;
mod bound;
pub mod claims;
mod finalizer;
mod finished;
mod info;
mod migrate;
mod pending;
mod release;
mod status;
mod token;
mod wait;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use capsule_crds::{CapsulePool, CapsuleSession, SessionPhase};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{instrument, warn};

use crate::context::Context;
use crate::error::{backoff, Error, Result};
use crate::labels;
use crate::metrics::{ControllerName, PoolLabels};
use crate::reconcile_timer::ReconcileTimer;
use crate::watch_cache::scoped_api;
use pending::{forget_pending, note_pending};

/// How often a waiting session looks for a worker again (a new worker turning Ready also wakes it).
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How often a bound session checks its worker and idle timeout.
const BOUND_CHECK: Duration = Duration::from_secs(5);
/// How often a session whose pool does not exist looks for it again.
const POOL_POLL: Duration = Duration::from_secs(2);

fn pool_labels(ns: &str, pool: &str) -> PoolLabels {
    PoolLabels {
        namespace: ns.into(),
        pool: pool.into(),
    }
}

#[instrument(skip_all, fields(namespace = session.namespace().unwrap_or_default(), session = session.name_any(), trace_id = tracing::field::Empty))]
pub async fn reconcile(session: Arc<CapsuleSession>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ReconcileTimer::start(&ctx.metrics, ControllerName::session);
    reconcile_inner(&session, &ctx).await
}

async fn reconcile_inner(session: &CapsuleSession, ctx: &Context) -> Result<Action> {
    let ns = session
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(session.name_any()))?;
    if session.metadata.deletion_timestamp.is_some() {
        return finalizer::on_deleted(ctx, session, &ns).await;
    }
    let phase = session.status.as_ref().map(|s| s.phase).unwrap_or_default();
    match phase {
        SessionPhase::Released | SessionPhase::Failed => {
            forget_pending(ctx, session);
            finished::reconcile(ctx, session, &ns).await
        }
        SessionPhase::Bound => bound::check_bound(ctx, session, &ns).await,
        SessionPhase::Pending => {
            note_pending(ctx, session);
            // The finalizer is added in the same pass as the binding, concurrently with the reads
            // the binding needs: waiting for the finalizer's own watch event would add a round
            // trip to every acquisition. No worker is taken before the finalizer is stored.
            let add_finalizer = (!finalizer::has_finalizer(session))
                .then(|| finalizer::add_finalizer(ctx, session, &ns));
            acquire::acquire(ctx, session, &ns, add_finalizer).await
        }
    }
}

pub fn error_policy(_session: Arc<CapsuleSession>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(ControllerName::session, error.kind());
    warn!(error = %error, "session reconcile failed");
    Action::requeue(backoff(1))
}

/// The session's pool from the pool cache; read through the API when the cache lacks it (not
/// listed yet, or behind a pool just created).
async fn pool_of(ctx: &Context, ns: &str, name: &str) -> Result<Option<CapsulePool>> {
    let key = ObjectRef::new(name).within(ns);
    if let Some(pool) = ctx.pools.as_ref().and_then(|c| c.store().get(&key)) {
        return Ok(Some(pool.as_ref().clone()));
    }
    let pools: Api<CapsulePool> = Api::namespaced(ctx.client.clone(), ns);
    Ok(pools.get_opt(name).await?)
}

/// The sessions of `pool` still waiting for a worker.
fn waiting_on(
    sessions: &Store<CapsuleSession>,
    ns: Option<String>,
    pool: Option<&String>,
) -> Vec<ObjectRef<CapsuleSession>> {
    sessions
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns && Some(&s.spec.pool) == pool)
        .filter(|s| {
            s.status
                .as_ref()
                .is_none_or(|st| st.phase == SessionPhase::Pending)
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Runs the session controller until `shutdown` resolves. `pods` are the pod cache's changes.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    pods: BoxStream<'static, Pod>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let sessions: Api<CapsuleSession> = scoped_api(client, namespace.as_deref());
    let controller = Controller::new(sessions, watcher::Config::default());
    let store = controller.store();
    let announced_store = store.clone();
    // A worker turning Ready, or announcing itself idle before that, wakes the sessions waiting
    // on its pool.
    let announced = ctx.wakeups.clone().stream().flat_map(move |(ns, pool)| {
        futures::stream::iter(waiting_on(&announced_store, Some(ns), Some(&pool)))
    });
    controller
        .watches_stream(pods.map(Ok), move |pod: Pod| {
            waiting_on(&store, pod.namespace(), pod.labels().get(labels::POOL))
        })
        .reconcile_on(announced)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(error) = result {
                warn!(%error, "session controller stream error");
            }
            futures::future::ready(())
        })
        .await;
}
