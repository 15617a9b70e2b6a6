//! Pods as this process's own writes returned them, shown to heartbeat ingest until its cache holds
//! that version or a later one. A binding or a release is then in every heartbeat reply as soon as
//! its patch returns, and the worker can be told at once instead of after the watch delivers it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::directory::{pod_facts, PodFacts};
use crate::pool::expectations::at_or_after;

/// How long a write is shown when the cache never catches up (the pod was deleted meanwhile, or
/// the watch is down): long enough for any watch, short enough not to outlive the pod by much.
const SHOWN_AT_MOST: Duration = Duration::from_secs(60);

/// At most this many writes are shown at once; beyond it the oldest goes (the cache answers then).
const MAX_SHOWN: usize = 4096;

struct Shown {
    facts: PodFacts,
    version: String,
    at: Instant,
}

#[derive(Default)]
pub struct WrittenPods {
    pods: Mutex<HashMap<(String, String), Shown>>,
    /// Lets a heartbeat skip the lock when nothing is shown (the usual case).
    any: AtomicBool,
}

impl WrittenPods {
    /// A pod as a write of this process returned it.
    pub fn wrote(&self, pod: &Pod, now: Instant) {
        let Some(version) = pod.resource_version() else {
            return;
        };
        let id = (pod.namespace().unwrap_or_default(), pod.name_any());
        let mut pods = self.pods.lock().expect("written pods");
        if pods.len() >= MAX_SHOWN && !pods.contains_key(&id) {
            let oldest = pods
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone());
            oldest.map(|k| pods.remove(&k));
        }
        let facts = pod_facts(pod);
        pods.insert(
            id,
            Shown {
                facts,
                version,
                at: now,
            },
        );
        self.any.store(true, Ordering::Release);
    }

    /// The facts of the pod's last write when `cached` (the cache's copy) is older than it.
    pub fn newer_than(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<&Pod>,
        now: Instant,
    ) -> Option<PodFacts> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut pods = self.pods.lock().expect("written pods");
        let id = (namespace.to_string(), name.to_string());
        let shown = pods.get(&id)?;
        let cached_version = cached.and_then(|p| p.resource_version());
        let caught_up = cached_version.is_some_and(|v| at_or_after(&v, &shown.version));
        if caught_up || now.duration_since(shown.at) > SHOWN_AT_MOST {
            pods.remove(&id);
            self.any.store(!pods.is_empty(), Ordering::Release);
            return None;
        }
        Some(shown.facts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(version: &str, session: Option<&str>) -> Pod {
        let mut labels = json!({"capsule.dev/pool": "p"});
        let mut annotations = json!({});
        if let Some(session) = session {
            labels["capsule.dev/session"] = json!(session);
            annotations["capsule.dev/session-token-sha256"] = json!("h");
        }
        serde_json::from_value(json!({"metadata": {
            "name": "w", "namespace": "ns", "resourceVersion": version,
            "labels": labels, "annotations": annotations,
        }}))
        .unwrap()
    }

    #[test]
    fn a_write_is_shown_until_the_cache_holds_its_version_or_later() {
        let (written, now) = (WrittenPods::default(), Instant::now());
        let cached = pod("5", None);
        assert_eq!(written.newer_than("ns", "w", Some(&cached), now), None);
        written.wrote(&pod("6", Some("s")), now);
        let shown = written.newer_than("ns", "w", Some(&cached), now).unwrap();
        assert_eq!(shown.binding.unwrap().session, "s");
        assert!(
            written.newer_than("ns", "w", None, now).is_some(),
            "a cache without the pod is behind too"
        );
        assert_eq!(written.newer_than("ns", "other", None, now), None);
        let later = pod("7", None);
        assert_eq!(written.newer_than("ns", "w", Some(&later), now), None);
        assert_eq!(
            written.newer_than("ns", "w", Some(&cached), now),
            None,
            "forgotten once the cache caught up"
        );
    }

    #[test]
    fn a_write_the_cache_never_shows_is_forgotten_after_a_while() {
        let (written, now) = (WrittenPods::default(), Instant::now());
        written.wrote(&pod("6", Some("s")), now);
        let late = now + SHOWN_AT_MOST + Duration::from_secs(1);
        assert_eq!(written.newer_than("ns", "w", None, late), None);
    }

    #[test]
    fn the_oldest_write_goes_beyond_the_bound() {
        let (written, now) = (WrittenPods::default(), Instant::now());
        for i in 0..=MAX_SHOWN {
            let mut p = pod("6", Some("s"));
            p.metadata.name = Some(format!("w{i}"));
            written.wrote(&p, now + Duration::from_millis(i as u64));
        }
        assert_eq!(written.pods.lock().unwrap().len(), MAX_SHOWN);
        assert_eq!(written.newer_than("ns", "w0", None, now), None);
        assert!(written
            .newer_than("ns", &format!("w{MAX_SHOWN}"), None, now)
            .is_some());
    }
}
