//! What this process remembers of a session still waiting for a worker: when it first saw it and
//! which acquisition counts it already made, so a retried pass never counts twice.

use std::time::{Duration, Instant};

use capsule_crds::CapsuleSession;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::context::{Context, PendingAcquisition};

/// Pending sessions whose first sighting is remembered before old entries are swept.
const FIRST_SEEN_LIMIT: usize = 10_000;

/// Milliseconds since the session was created (whole seconds, as the API server stores them).
pub(super) fn age_ms(session: &CapsuleSession) -> i64 {
    session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).as_millis() as i64)
        .unwrap_or(0)
        .max(0)
}

/// Takes what this process noted of a session that is now bound: how long it waited for a worker
/// (from when this process first saw it, or, for a session an earlier process saw first, from its
/// `creationTimestamp`, whole seconds, so up to a second more than the truth) and what was counted.
pub(super) fn take_pending(
    ctx: &Context,
    session: &CapsuleSession,
) -> (i64, Option<PendingAcquisition>) {
    let pending = session.uid().and_then(|uid| {
        ctx.pending_sessions
            .lock()
            .expect("pending-sessions lock")
            .remove(&uid)
    });
    let waited_ms = match &pending {
        Some(p) => p.first_seen.elapsed().as_millis() as i64,
        None => age_ms(session),
    };
    (waited_ms, pending)
}

pub(super) fn forget_pending(ctx: &Context, session: &CapsuleSession) {
    if let Some(uid) = session.uid() {
        ctx.pending_sessions
            .lock()
            .expect("pending-sessions lock")
            .remove(&uid);
    }
}

/// Notes when this process first saw a pending session.
pub(super) fn note_pending(ctx: &Context, session: &CapsuleSession) {
    let Some(uid) = session.uid() else { return };
    let mut pending = ctx.pending_sessions.lock().expect("pending-sessions lock");
    if pending.len() >= FIRST_SEEN_LIMIT {
        // Entries of sessions removed without a final pass (finalizer stripped by hand) would
        // otherwise stay: drop everything older than any acquire timeout.
        pending.retain(|_, p| p.first_seen.elapsed() < Duration::from_secs(86_400));
    }
    pending.entry(uid).or_insert_with(|| PendingAcquisition {
        first_seen: Instant::now(),
        attempt_counted: false,
        miss_counted: false,
    });
}

/// Marks the attempt (and, with `miss`, the miss) of a pending session counted; returns which of
/// the two were not counted before by this process.
pub(super) fn mark_counted(ctx: &Context, session: &CapsuleSession, miss: bool) -> (bool, bool) {
    let Some(uid) = session.uid() else {
        return (true, miss);
    };
    let mut pending = ctx.pending_sessions.lock().expect("pending-sessions lock");
    match pending.get_mut(&uid) {
        Some(p) => {
            let new_attempt = !p.attempt_counted;
            let new_miss = miss && !p.miss_counted;
            p.attempt_counted = true;
            p.miss_counted |= miss;
            (new_attempt, new_miss)
        }
        None => (true, miss),
    }
}
