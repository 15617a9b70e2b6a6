//! Sessions waiting for a worker that does not exist yet: they wake the pool controller and add to
//! the pool's target.

use capsule_crds::{CapsuleSession, SessionPhase};

use crate::context::Context;

/// Whether a session waits for a worker that does not exist yet: its controller looked and found
/// no idle worker (a miss). A session not yet looked at is not counted, as it most likely takes a
/// warm worker; counting it would start a worker per session, only to remove it again.
pub fn waits_for_new_worker(session: &CapsuleSession) -> bool {
    session.metadata.deletion_timestamp.is_none()
        && session
            .status
            .as_ref()
            .is_some_and(|st| st.phase == SessionPhase::Pending && st.warm_hit == Some(false))
}

/// Sessions of this pool that missed; the pool grows by that many (up to maxWorkers).
pub(super) fn waiting_sessions(ctx: &Context, namespace: &str, pool: &str) -> usize {
    let Some(cache) = ctx.sessions.as_ref() else {
        return 0;
    };
    let of_pool = cache.group(namespace, pool);
    of_pool.iter().filter(|s| waits_for_new_worker(s)).count()
}

#[cfg(test)]
mod tests {
    use super::waits_for_new_worker;
    use capsule_crds::CapsuleSession;
    use serde_json::json;

    fn session(status: serde_json::Value, deleting: bool) -> CapsuleSession {
        let mut metadata = json!({"name": "s", "namespace": "default"});
        if deleting {
            metadata["deletionTimestamp"] = json!("2026-11-28T00:00:00Z");
        }
        serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
            "metadata": metadata, "spec": {"pool": "p"}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_session_that_missed_makes_its_pool_grow() {
        let missed = json!({"phase": "Pending", "warmHit": false});
        assert!(waits_for_new_worker(&session(missed.clone(), false)));
        assert!(
            !waits_for_new_worker(&session(missed, true)),
            "being deleted"
        );
        assert!(
            !waits_for_new_worker(&session(serde_json::Value::Null, false)),
            "not looked at yet: it most likely takes a warm worker"
        );
        assert!(!waits_for_new_worker(&session(
            json!({"phase": "Pending"}),
            false
        )));
        assert!(!waits_for_new_worker(&session(
            json!({"phase": "Bound", "warmHit": false}),
            false
        )));
    }
}
