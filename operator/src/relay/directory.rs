//! What heartbeat ingest needs to know about the cluster, answered from watch caches so a heartbeat
//! never costs an API call.

use std::time::Instant;

use capsule_protocol::auth::worker_credential;
use capsule_protocol::heartbeat::SessionBinding;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use super::written::WrittenPods;
use crate::labels;
use crate::watch_cache::GroupedCache;

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
    /// A pod as a write of this process returned it: [`Directory::pod`] answers with it until the
    /// cache holds that version or a later one.
    fn wrote(&self, _pod: &Pod) {}
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
    pub pods: GroupedCache<Pod>,
    written: WrittenPods,
}

impl StoreDirectory {
    pub fn new(secrets: Store<Secret>, pods: GroupedCache<Pod>) -> Self {
        Self {
            secrets,
            pods,
            written: WrittenPods::default(),
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
        let cached = self.pods.store().get(&key);
        let now = Instant::now();
        let newer = self
            .written
            .newer_than(namespace, pod, cached.as_deref(), now);
        newer.or_else(|| cached.map(|p| pod_facts(&p)))
    }

    fn wrote(&self, pod: &Pod) {
        self.written.wrote(pod, Instant::now());
    }

    fn cached_pod(&self, namespace: &str, pod: &str) -> Option<Pod> {
        let key = ObjectRef::new(pod).within(namespace);
        self.pods.store().get(&key).map(|p| p.as_ref().clone())
    }

    fn pool_pods(&self, namespace: &str, pool: &str) -> Option<Vec<Pod>> {
        if !self.pods.is_listed() {
            return None;
        }
        let pods = self.pods.group(namespace, pool).into_iter();
        Some(pods.map(|p| p.as_ref().clone()).collect())
    }
}
