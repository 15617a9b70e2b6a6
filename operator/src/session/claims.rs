//! Workers this process is taking for a session right now. Sessions created together read the
//! same idle workers; without this they would all try the oldest first, and each 409 on the
//! pod's compare-and-swap costs a round trip: n sessions made O(n²) patches. A claim is this
//! process's own expectation, so it only orders the attempts; the patch with the pod's
//! resourceVersion still decides who wins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a claim keeps other sessions off a worker: well beyond a pod cache's lag behind the
/// label the claim leads to.
const CLAIM_TTL: Duration = Duration::from_secs(10);

/// (namespace, pod) → the session (uid) that claimed it, and when.
#[derive(Default)]
pub struct WorkerClaims {
    claims: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl WorkerClaims {
    /// Claims `pod` for `session` unless another session's claim is younger than the TTL; true
    /// when this session holds the claim. Expired claims are dropped on the way, which bounds the
    /// map by the workers claimed within one TTL.
    pub fn try_claim(&self, ns: &str, pod: &str, session: &str, now: Instant) -> bool {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        claims.retain(|_, (_, at)| now.saturating_duration_since(*at) < CLAIM_TTL);
        let key = (ns.to_owned(), pod.to_owned());
        match claims.get(&key) {
            Some((holder, _)) if holder != session => false,
            _ => {
                claims.insert(key, (session.to_owned(), now));
                true
            }
        }
    }

    /// Drops the claim on `pod`: its session released it, and it is free to take again.
    pub fn release(&self, ns: &str, pod: &str) {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        claims.remove(&(ns.to_owned(), pod.to_owned()));
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
}
