//! The gateway's view of the cluster: each session's phase and endpoint, and the token hash its
//! bound worker pod carries. Pure: the watchers in [`crate::watch`] feed it events, tests feed it
//! objects.
//!
//! Invariant: a token hash is trusted only from the pod the session's `status.worker` names, and
//! only while that pod's `capsule.dev/session` label names the same session (the operator writes
//! label and annotation in one patch when it binds, and removes both when it releases).

use std::collections::HashMap;
use std::sync::RwLock;

use capsule_crds::session::{CapsuleSession, SessionPhase};
use capsule_protocol::{auth, names};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::ResourceExt;

/// `(namespace, name)` of a session or a pod.
pub type Key = (String, String);

/// What the gateway keeps of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    pub phase: SessionPhase,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub endpoint: Option<String>,
    pub worker: Option<String>,
}

/// What the gateway keeps of a bound worker pod: the session its label names and its token hash.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub session: Option<String>,
    pub token_sha256: Option<[u8; 32]>,
}

impl SessionView {
    pub fn of(session: &CapsuleSession) -> Self {
        let status = session.status.clone().unwrap_or_default();
        // A pending session has no reason of its own; its Bound condition says why it waits
        // (e.g. PoolExhausted).
        let waiting = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Bound" && c.status != "True");
        SessionView {
            phase: status.phase,
            reason: status.reason.or_else(|| waiting.map(|c| c.reason.clone())),
            message: status
                .message
                .or_else(|| waiting.map(|c| c.message.clone())),
            endpoint: status.endpoint,
            worker: status.worker,
        }
    }
}

impl PodView {
    pub fn of(pod: &Pod) -> Self {
        PodView {
            session: pod.labels().get(names::SESSION).cloned(),
            token_sha256: pod
                .annotations()
                .get(names::SESSION_TOKEN_SHA256)
                .and_then(|h| auth::parse_sha256_hex(h)),
        }
    }
}

/// Where a request for a session goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// No such session in the index.
    NotFound,
    /// The session exists but has no worker the gateway can trust; the session's phase and why.
    NotBound {
        phase: SessionPhase,
        reason: Option<String>,
        message: String,
    },
    /// Bound: forward to `endpoint` once the bearer hashes to `token_sha256`.
    Bound {
        endpoint: String,
        worker: String,
        token_sha256: [u8; 32],
    },
}

/// A map kept in step with one watch: a re-list builds a fresh map that replaces the old one only
/// when complete, so objects deleted while the watch was broken disappear.
#[derive(Debug)]
pub struct Mirror<V> {
    current: HashMap<Key, V>,
    listing: Option<HashMap<Key, V>>,
    synced: bool,
}

impl<V> Default for Mirror<V> {
    fn default() -> Self {
        Mirror {
            current: HashMap::new(),
            listing: None,
            synced: false,
        }
    }
}

impl<V> Mirror<V> {
    /// Applies one watcher event, `view` turning an object into what is kept of it.
    pub fn apply<K: kube::Resource>(&mut self, event: watcher::Event<K>, view: impl Fn(&K) -> V) {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            watcher::Event::Init => self.listing = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let listing = self.listing.get_or_insert_with(HashMap::new);
                listing.insert(key(&o), view(&o));
            }
            watcher::Event::InitDone => {
                self.current = self.listing.take().unwrap_or_default();
                self.synced = true;
            }
            watcher::Event::Apply(o) => {
                self.current.insert(key(&o), view(&o));
            }
            watcher::Event::Delete(o) => {
                self.current.remove(&key(&o));
            }
        }
    }

    pub fn get(&self, key: &Key) -> Option<&V> {
        self.current.get(key)
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Whether the first complete list arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }
}

/// Sessions and bound pods, shared between the watchers and the request handlers.
#[derive(Debug, Default)]
pub struct Index {
    sessions: RwLock<Mirror<SessionView>>,
    pods: RwLock<Mirror<PodView>>,
}

impl Index {
    pub fn apply_session(&self, event: watcher::Event<CapsuleSession>) {
        self.sessions.write().unwrap().apply(event, SessionView::of);
    }

    pub fn apply_pod(&self, event: watcher::Event<Pod>) {
        self.pods.write().unwrap().apply(event, PodView::of);
    }

    /// Whether both watches listed once: until then a missing session may merely be unlisted.
    pub fn ready(&self) -> bool {
        self.sessions.read().unwrap().synced() && self.pods.read().unwrap().synced()
    }

    pub fn sessions_indexed(&self) -> usize {
        self.sessions.read().unwrap().len()
    }

    /// Where session `namespace/name` is served, if anywhere.
    pub fn resolve(&self, namespace: &str, name: &str) -> Resolution {
        let key = (namespace.to_string(), name.to_string());
        let Some(session) = self.sessions.read().unwrap().get(&key).cloned() else {
            return Resolution::NotFound;
        };
        let not_bound = |why: String| Resolution::NotBound {
            phase: session.phase,
            reason: session.reason.clone(),
            message: why,
        };
        if session.phase != SessionPhase::Bound {
            let why = session
                .message
                .clone()
                .unwrap_or_else(|| "no worker yet".into());
            return not_bound(why);
        }
        let (Some(endpoint), Some(worker)) = (session.endpoint.clone(), session.worker.clone())
        else {
            return not_bound("the session's status names no worker endpoint yet".into());
        };
        let pod = self
            .pods
            .read()
            .unwrap()
            .get(&(namespace.to_string(), worker.clone()))
            .cloned();
        match pod {
            Some(PodView {
                session: Some(bound_to),
                token_sha256: Some(token_sha256),
            }) if bound_to == name => Resolution::Bound {
                endpoint,
                worker,
                token_sha256,
            },
            _ => not_bound(format!(
                "worker pod {worker} is gone or no longer bound to this session"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN: &str = "the-token";

    fn session(name: &str, phase: &str, worker: Option<&str>) -> CapsuleSession {
        serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"pool": "p"},
            "status": {"phase": phase, "worker": worker, "reason": "WorkerLost",
                "message": "worker pod w1 is gone",
                "endpoint": worker.map(|w| format!("http://{w}:8000"))},
        }))
        .unwrap()
    }

    fn pod(name: &str, bound_to: Option<&str>, token: &str) -> Pod {
        let labels = bound_to
            .map(|s| json!({names::SESSION: s}))
            .unwrap_or(json!({}));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": labels,
                "annotations": {names::SESSION_TOKEN_SHA256: auth::token_sha256_hex(token)}},
        }))
        .unwrap()
    }

    fn listed(index: &Index, sessions: Vec<CapsuleSession>, pods: Vec<Pod>) {
        index.apply_session(watcher::Event::Init);
        for s in sessions {
            index.apply_session(watcher::Event::InitApply(s));
        }
        index.apply_session(watcher::Event::InitDone);
        index.apply_pod(watcher::Event::Init);
        for p in pods {
            index.apply_pod(watcher::Event::InitApply(p));
        }
        index.apply_pod(watcher::Event::InitDone);
    }

    #[test]
    fn a_bound_session_resolves_to_its_endpoint_and_its_pods_token_hash() {
        let index = Index::default();
        assert!(!index.ready());
        listed(
            &index,
            vec![session("s", "Bound", Some("w1"))],
            vec![pod("w1", Some("s"), TOKEN)],
        );
        assert!(index.ready());
        assert_eq!(
            index.resolve("ns", "s"),
            Resolution::Bound {
                endpoint: "http://w1:8000".into(),
                worker: "w1".into(),
                token_sha256: auth::token_sha256(TOKEN),
            }
        );
        assert_eq!(index.resolve("ns", "other"), Resolution::NotFound);
        assert_eq!(index.resolve("elsewhere", "s"), Resolution::NotFound);
    }

    #[test]
    fn a_pod_bound_to_another_session_is_not_trusted() {
        let index = Index::default();
        listed(
            &index,
            vec![session("s", "Bound", Some("w1"))],
            vec![pod("w1", Some("x"), TOKEN)],
        );
        assert!(matches!(
            index.resolve("ns", "s"),
            Resolution::NotBound { .. }
        ));
        // Unlabelled: the operator released it.
        index.apply_pod(watcher::Event::Apply(pod("w1", None, TOKEN)));
        assert!(matches!(
            index.resolve("ns", "s"),
            Resolution::NotBound { .. }
        ));
    }

    #[test]
    fn a_failed_session_reports_its_phase_and_reason() {
        let index = Index::default();
        listed(&index, vec![session("s", "Failed", None)], vec![]);
        assert_eq!(
            index.resolve("ns", "s"),
            Resolution::NotBound {
                phase: SessionPhase::Failed,
                reason: Some("WorkerLost".into()),
                message: "worker pod w1 is gone".into(),
            }
        );
    }

    #[test]
    fn a_pending_session_reports_why_it_waits() {
        let mut pending = session("s", "Pending", None);
        let status = pending.status.as_mut().unwrap();
        (status.reason, status.message) = (None, None);
        status.conditions =
            vec![
                serde_json::from_value(json!({"type": "Bound", "status": "False",
            "reason": "PoolExhausted", "message": "all 3 workers of pool p are in use",
            "lastTransitionTime": "2026-11-30T00:00:00Z"}))
                .unwrap(),
            ];
        let index = Index::default();
        listed(&index, vec![pending], vec![]);
        assert_eq!(
            index.resolve("ns", "s"),
            Resolution::NotBound {
                phase: SessionPhase::Pending,
                reason: Some("PoolExhausted".into()),
                message: "all 3 workers of pool p are in use".into(),
            }
        );
    }

    #[test]
    fn a_deleted_pod_or_session_stops_resolving_and_a_rebinding_is_followed() {
        let index = Index::default();
        listed(
            &index,
            vec![session("s", "Bound", Some("w1"))],
            vec![pod("w1", Some("s"), TOKEN)],
        );
        index.apply_pod(watcher::Event::Delete(pod("w1", Some("s"), TOKEN)));
        assert!(matches!(
            index.resolve("ns", "s"),
            Resolution::NotBound { .. }
        ));
        index.apply_session(watcher::Event::Delete(session("s", "Bound", Some("w1"))));
        assert_eq!(index.resolve("ns", "s"), Resolution::NotFound);
        // Created again under the same name, bound to another worker with a new token.
        index.apply_session(watcher::Event::Apply(session("s", "Bound", Some("w2"))));
        index.apply_pod(watcher::Event::Apply(pod("w2", Some("s"), "new-token")));
        match index.resolve("ns", "s") {
            Resolution::Bound {
                worker,
                token_sha256,
                ..
            } => {
                assert_eq!(worker, "w2");
                assert_eq!(token_sha256, auth::token_sha256("new-token"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_broken() {
        let index = Index::default();
        listed(
            &index,
            vec![session("a", "Pending", None), session("b", "Pending", None)],
            vec![],
        );
        assert_eq!(index.sessions_indexed(), 2);
        index.apply_session(watcher::Event::Init);
        index.apply_session(watcher::Event::InitApply(session("b", "Pending", None)));
        // Until the re-list completes the old view still answers.
        assert_eq!(index.sessions_indexed(), 2);
        index.apply_session(watcher::Event::InitDone);
        assert_eq!(index.sessions_indexed(), 1);
        assert_eq!(index.resolve("ns", "a"), Resolution::NotFound);
    }
}
