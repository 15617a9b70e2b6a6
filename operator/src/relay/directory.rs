//! What heartbeat ingest needs to know about the cluster, answered from watch caches so a heartbeat
//! never costs an API call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use capsule_protocol::auth::worker_credential;
use capsule_protocol::heartbeat::SessionBinding;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::labels;
use crate::watch_cache::WatchCache;

/// What the operator knows of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFacts {
    /// The pool its `capsule.dev/pool` label names.
    pub pool: Option<String>,
    /// The session it is bound to, with the token's hash.
    pub binding: Option<SessionBinding>,
    /// Which credential the pod was given.
    pub credential: CredentialKind,
    /// Its Ready condition is true.
    pub ready: bool,
}

/// The credential a worker pod holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CredentialKind {
    /// Its own, derived from the pool key for this pod alone.
    #[default]
    PerWorker,
    /// The pool key itself: a pod made by an operator before per-worker credentials. Accepted
    /// until it goes, so an upgrade does not cut off the sessions bound to such pods; idle ones are
    /// replaced at once as outdated.
    LegacyPoolKey,
}

/// The environment variable through which operators before per-worker credentials handed every
/// worker the pool key.
const LEGACY_POOL_KEY_ENV: &str = "CAPSULE_POOL_TOKEN";

pub trait Directory: Send + Sync {
    /// The key of a pool, from its Secret.
    fn pool_key(&self, namespace: &str, pool: &str) -> Option<String>;
    fn pod(&self, namespace: &str, pod: &str) -> Option<PodFacts>;
    /// The pool's pods as the cache holds them; `None` until the cache has listed once.
    fn pool_pods(&self, _namespace: &str, _pool: &str) -> Option<Vec<Pod>> {
        None
    }
    /// One pod as the cache holds it.
    fn cached_pod(&self, _namespace: &str, _pod: &str) -> Option<Pod> {
        None
    }
}

/// The credential `pod` presents and is presented by the operator, given its pool's key.
pub fn credential_of(key: &str, pod: &Pod) -> String {
    let namespace = pod.namespace().unwrap_or_default();
    expected_credential(key, &namespace, &pod.name_any(), credential_kind(pod))
}

/// The credential a pod holding `kind` presents.
pub fn expected_credential(key: &str, namespace: &str, pod: &str, kind: CredentialKind) -> String {
    match kind {
        CredentialKind::PerWorker => worker_credential(key, namespace, pod),
        CredentialKind::LegacyPoolKey => key.to_string(),
    }
}

fn credential_kind(pod: &Pod) -> CredentialKind {
    let legacy = pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == LEGACY_POOL_KEY_ENV)
    });
    if legacy {
        CredentialKind::LegacyPoolKey
    } else {
        CredentialKind::PerWorker
    }
}

/// Facts of a pod object.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let labels = pod.labels();
    let annotations = pod.annotations();
    let binding = match (
        labels.get(labels::SESSION),
        annotations.get(labels::SESSION_TOKEN_SHA256),
    ) {
        (Some(session), Some(hash)) => Some(SessionBinding {
            session: session.clone(),
            namespace: pod.namespace().unwrap_or_default(),
            token_sha256: hash.clone(),
            session_uid: annotations.get(labels::SESSION_UID).cloned(),
            checkpoint_key: None,
        }),
        _ => None,
    };
    PodFacts {
        pool: labels.get(labels::POOL).cloned(),
        binding,
        credential: credential_kind(pod),
        ready: crate::pool::plan::pod_ready(pod),
    }
}

/// The token (or key) of a Secret the operator made.
pub fn secret_token(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(labels::TOKEN_KEY)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The directory over the operator's watch caches of its Secrets and pods.
pub struct StoreDirectory {
    pub secrets: Store<Secret>,
    pub pods: WatchCache<Pod>,
    facts: FactsMemo,
}

impl StoreDirectory {
    pub fn new(secrets: Store<Secret>, pods: WatchCache<Pod>) -> Self {
        Self {
            secrets,
            pods,
            facts: FactsMemo::default(),
        }
    }
}

impl Directory for StoreDirectory {
    fn pool_key(&self, namespace: &str, pool: &str) -> Option<String> {
        let key = ObjectRef::new(&labels::pool_token_secret(pool)).within(namespace);
        self.secrets.get(&key).and_then(|s| secret_token(&s))
    }

    fn pod(&self, namespace: &str, pod: &str) -> Option<PodFacts> {
        let key = ObjectRef::new(pod).within(namespace);
        let cached = self.pods.store().get(&key)?;
        Some(self.facts.of(namespace, pod, &cached))
    }

    fn cached_pod(&self, namespace: &str, pod: &str) -> Option<Pod> {
        let key = ObjectRef::new(pod).within(namespace);
        self.pods.store().get(&key).map(|p| p.as_ref().clone())
    }

    fn pool_pods(&self, namespace: &str, pool: &str) -> Option<Vec<Pod>> {
        if !self.pods.is_listed() {
            return None;
        }
        let of_pool = |p: &Pod| {
            p.namespace().as_deref() == Some(namespace)
                && p.labels().get(labels::POOL).map(String::as_str) == Some(pool)
        };
        let pods = self.pods.store().state().into_iter().filter(|p| of_pool(p));
        Some(pods.map(|p| p.as_ref().clone()).collect())
    }
}

/// Facts of each cached pod object, so a heartbeat does not walk its pod's labels and every
/// container's environment again. An entry holds only for the very object it was taken from: the
/// cache replaces a pod's `Arc` on every change, and the `Weak` kept here keeps that allocation's
/// address from being reused, so a pointer match means the same, unchanged object.
#[derive(Default)]
struct FactsMemo {
    inner: Mutex<MemoInner>,
}

#[derive(Default)]
struct MemoInner {
    /// Namespace, then pod name: looked up by `&str` without building a key.
    by_pod: HashMap<String, HashMap<String, (Weak<Pod>, PodFacts)>>,
    len: usize,
    /// Entry count at which entries of pods gone from the cache are swept out.
    sweep_at: usize,
}

/// Fewest entries before the first sweep.
const MEMO_SWEEP_FLOOR: usize = 1024;

impl FactsMemo {
    fn of(&self, namespace: &str, pod: &str, object: &Arc<Pod>) -> PodFacts {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let hit = inner
            .by_pod
            .get(namespace)
            .and_then(|pods| pods.get(pod))
            .filter(|(seen, _)| seen.as_ptr() == Arc::as_ptr(object));
        if let Some((_, facts)) = hit {
            return facts.clone();
        }
        let facts = pod_facts(object);
        inner.insert(namespace, pod, Arc::downgrade(object), facts.clone());
        facts
    }
}

impl MemoInner {
    fn insert(&mut self, namespace: &str, pod: &str, object: Weak<Pod>, facts: PodFacts) {
        let pods = self.by_pod.entry(namespace.to_owned()).or_default();
        if pods.insert(pod.to_owned(), (object, facts)).is_none() {
            self.len += 1;
        }
        if self.len >= self.sweep_at {
            self.sweep();
        }
    }

    /// Drops the entries of objects the cache no longer holds; amortised by doubling the bound.
    fn sweep(&mut self) {
        for pods in self.by_pod.values_mut() {
            pods.retain(|_, (object, _)| object.strong_count() > 0);
        }
        self.by_pod.retain(|_, pods| !pods.is_empty());
        self.len = self.by_pod.values().map(HashMap::len).sum();
        self.sweep_at = (self.len * 2).max(MEMO_SWEEP_FLOOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pool: &str) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.labels = Some([(labels::POOL.to_string(), pool.to_string())].into());
        Arc::new(pod)
    }

    #[test]
    fn memoised_facts_follow_each_new_object_of_a_pod() {
        let memo = FactsMemo::default();
        let first = pod("a");
        assert_eq!(memo.of("ns", "w", &first).pool.as_deref(), Some("a"));
        assert_eq!(memo.of("ns", "w", &first).pool.as_deref(), Some("a"));
        // The cache replaced the object (relabelled): its facts, not the memo's, are returned.
        let relabelled = pod("b");
        assert_eq!(memo.of("ns", "w", &relabelled).pool.as_deref(), Some("b"));
        assert_eq!(memo.of("other", "w", &first).pool.as_deref(), Some("a"));
    }

    #[test]
    fn entries_of_objects_gone_from_the_cache_are_swept() {
        let memo = FactsMemo::default();
        let kept = pod("a");
        memo.of("ns", "kept", &kept);
        for i in 0..3 * MEMO_SWEEP_FLOOR {
            // Each object is dropped at once, as a deleted pod leaves the cache.
            memo.of("ns", &format!("w{i}"), &pod("a"));
        }
        let inner = memo.inner.lock().unwrap();
        assert!(inner.len <= MEMO_SWEEP_FLOOR, "{} entries", inner.len);
        assert!(inner.by_pod["ns"].contains_key("kept"));
    }
}
