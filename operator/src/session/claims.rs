//! Workers this process is taking or took for a session: its own expectations, ahead of the pod
//! cache. Sessions created together read the same idle workers; without claims they would all try
//! the oldest first, and each 409 on the pod's compare-and-swap costs a round trip (n sessions made
//! O(n²) patches). A claim only orders the attempts: the patch with the pod's resourceVersion still
//! decides who wins. A worker taken (its label patched) stays recorded until released, so a pass
//! reading a pod cache that has not caught up with the label still finds its own worker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a claim keeps other sessions off a worker: well beyond a pod cache's lag behind the
/// label the claim leads to.
const CLAIM_TTL: Duration = Duration::from_secs(10);

/// How long a taken worker stays recorded when no release drops it (its pod vanished).
const TAKEN_TTL: Duration = Duration::from_secs(600);

struct Claim {
    session: String,
    at: Instant,
    taken: bool,
}

impl Claim {
    fn live(&self, now: Instant) -> bool {
        let ttl = if self.taken { TAKEN_TTL } else { CLAIM_TTL };
        now.saturating_duration_since(self.at) < ttl
    }
}

/// (namespace, pod) → the session (uid) that claimed or took it.
#[derive(Default)]
pub struct WorkerClaims {
    claims: Mutex<HashMap<(String, String), Claim>>,
}

impl WorkerClaims {
    /// Claims `pod` for `session` unless another session's claim is younger than the TTL; true
    /// when this session holds the claim. Expired claims are dropped on the way, which bounds the
    /// map by the workers claimed within one TTL.
    pub fn try_claim(&self, ns: &str, pod: &str, session: &str, now: Instant) -> bool {
        let mut claims = self.lock();
        claims.retain(|_, claim| claim.live(now));
        let key = (ns.to_owned(), pod.to_owned());
        match claims.get(&key) {
            Some(claim) if claim.session != session => false,
            _ => {
                let claim = Claim {
                    session: session.to_owned(),
                    at: now,
                    taken: false,
                };
                claims.insert(key, claim);
                true
            }
        }
    }

    /// Records that `session` took `pod`: the patch labelling it succeeded.
    pub fn mark_taken(&self, ns: &str, pod: &str, session: &str, now: Instant) {
        let claim = Claim {
            session: session.to_owned(),
            at: now,
            taken: true,
        };
        self.lock().insert((ns.to_owned(), pod.to_owned()), claim);
    }

    /// Whether this process took `pod` for `session` and has not released it.
    pub fn taken_by(&self, ns: &str, pod: &str, session: &str, now: Instant) -> bool {
        let claims = self.lock();
        claims
            .get(&(ns.to_owned(), pod.to_owned()))
            .is_some_and(|c| c.taken && c.session == session && c.live(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the claim on `pod`: its session released it, and it is free to take again.
    pub fn release(&self, ns: &str, pod: &str) {
        self.lock().remove(&(ns.to_owned(), pod.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_worker_is_skipped_by_other_sessions_until_the_claim_expires() {
        let claims = WorkerClaims::default();
        let now = Instant::now();
        assert!(claims.try_claim("ns", "w1", "a", now));
        assert!(claims.try_claim("ns", "w1", "a", now), "the holder again");
        assert!(!claims.try_claim("ns", "w1", "b", now));
        assert!(
            claims.try_claim("other", "w1", "b", now),
            "another namespace"
        );
        assert!(claims.try_claim("ns", "w1", "b", now + CLAIM_TTL));
        assert_eq!(
            claims.claims.lock().unwrap().len(),
            1,
            "expired ones dropped"
        );
        claims.release("ns", "w1");
        assert!(
            claims.try_claim("ns", "w1", "c", now + CLAIM_TTL),
            "released"
        );
    }

    #[test]
    fn a_taken_worker_stays_its_sessions_until_released() {
        let claims = WorkerClaims::default();
        let now = Instant::now();
        assert!(claims.try_claim("ns", "w1", "a", now));
        assert!(!claims.taken_by("ns", "w1", "a", now), "claimed, not taken");
        claims.mark_taken("ns", "w1", "a", now);
        let later = now + CLAIM_TTL * 2;
        assert!(claims.taken_by("ns", "w1", "a", later));
        assert!(!claims.taken_by("ns", "w1", "b", later));
        assert!(!claims.try_claim("ns", "w1", "b", later));
        claims.release("ns", "w1");
        assert!(!claims.taken_by("ns", "w1", "a", later));
        claims.mark_taken("ns", "w2", "a", now);
        assert!(
            !claims.taken_by("ns", "w2", "a", now + TAKEN_TTL),
            "a vanished pod's record expires"
        );
    }
}
