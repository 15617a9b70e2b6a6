//! What heartbeat ingest needs to know about the cluster, answered from watch caches so a heartbeat
//! never costs an API call.

use capsule_protocol::heartbeat::SessionBinding;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::labels;

/// What the operator knows of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFacts {
    /// The pool its `capsule.dev/pool` label names.
    pub pool: Option<String>,
    /// The session it is bound to, with the token's hash.
    pub binding: Option<SessionBinding>,
}

pub trait Directory: Send + Sync {
    fn pool_token(&self, namespace: &str, pool: &str) -> Option<String>;
    fn pod(&self, namespace: &str, pod: &str) -> Option<PodFacts>;
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
        }),
        _ => None,
    };
    PodFacts {
        pool: labels.get(labels::POOL).cloned(),
        binding,
    }
}

/// Token of a pool's Secret.
pub fn secret_token(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(labels::TOKEN_KEY)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The directory over the operator's watch caches of its Secrets and pods.
pub struct StoreDirectory {
    pub secrets: Store<Secret>,
    pub pods: Store<Pod>,
}

impl Directory for StoreDirectory {
    fn pool_token(&self, namespace: &str, pool: &str) -> Option<String> {
        let key = ObjectRef::new(&labels::pool_token_secret(pool)).within(namespace);
        self.secrets.get(&key).and_then(|s| secret_token(&s))
    }

    fn pod(&self, namespace: &str, pod: &str) -> Option<PodFacts> {
        let key = ObjectRef::new(pod).within(namespace);
        self.pods.get(&key).map(|p| pod_facts(&p))
    }
}
