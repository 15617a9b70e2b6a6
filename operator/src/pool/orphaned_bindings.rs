//! Bound workers whose session is gone or holds another worker: nobody releases them, so the plan
//! replaces them.

use capsule_crds::{CapsuleSession, SessionPhase, WorkerPhase};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::plan;
use crate::context::Context;
use crate::error::Result;
use crate::labels;

/// Bound workers whose session no longer exists (its finalizer was removed by hand, or it was
/// deleted while no operator ran): nobody will release them, and their interpreter holds another
/// client's state, so they are replaced. The session cache answers first; a session it lacks is
/// read from the API server, since the cache may not have synced yet after a restart. Without a
/// session cache (the pool controller's run never started, as in API-call tests that give none)
/// nothing is checked.
pub(super) async fn orphaned_bindings(
    ctx: &Context,
    namespace: &str,
    workers: &[plan::ClassifiedPod<'_>],
) -> Result<Vec<String>> {
    // Without a session cache there is nothing to compare with.
    let Some(store) = ctx.sessions.as_ref().map(|cache| cache.store()) else {
        return Ok(Vec::new());
    };
    let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = |session: &str| store.get(&ObjectRef::new(session).within(namespace));
    let mut orphans = Vec::new();
    for w in workers {
        if w.phase == WorkerPhase::Terminating {
            continue;
        }
        let Some(session) = w.pod.labels().get(labels::SESSION) else {
            continue;
        };
        let pod = w.pod.name_any();
        match cached(session) {
            // A bind whose response was lost can land after its session took another worker:
            // the session's status names the worker it holds, and this one is a leftover.
            Some(s) => {
                let elsewhere = s.status.as_ref().is_some_and(|st| {
                    st.phase == SessionPhase::Bound && st.worker.as_ref().is_some_and(|w| *w != pod)
                });
                if elsewhere {
                    warn!(pod = %pod, "worker labelled for a session bound to another worker: replacing it");
                    orphans.push(pod);
                }
            }
            None => {
                if sessions.get_opt(session).await?.is_none() {
                    warn!(pod = %pod, "worker bound to a session that no longer exists: replacing it");
                    orphans.push(pod);
                }
            }
        }
    }
    Ok(orphans)
}
