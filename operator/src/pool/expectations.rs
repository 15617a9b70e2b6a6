//! The writes this process made to a pool's pods that its pod cache may not show yet. A pool pass
//! plans from the cache only when the cache shows every one of them; otherwise it lists the pods
//! fresh, so a pod just created is never created twice (controller-runtime's expectations).
//!
//! A fresh list is at least as new as every write made before it, so it becomes the new
//! expectation: the cache is trusted again once it has caught up with that list.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// How long an expectation the cache never meets is kept. The cache may have moved past a write
/// to a version that cannot be ordered against it; until this expires each pass lists fresh.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(120);

/// What the cache must show of one pod.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    /// The pod at this resourceVersion or later.
    At(String),
    /// No pod of this name, or one being deleted.
    Gone,
}

#[derive(Clone, Debug, Default)]
pub struct PodExpectations {
    pods: BTreeMap<String, (Expected, Instant)>,
    /// A write whose outcome is unknown (it failed, perhaps after the server applied it): only a
    /// fresh list tells what is there.
    unknown_write: bool,
}

impl PodExpectations {
    /// A write that returned `pod` (a create or a patch).
    pub fn written(&mut self, pod: &Pod, now: Instant) {
        let version = pod.resource_version().unwrap_or_default();
        self.pods
            .insert(pod.name_any(), (Expected::At(version), now));
    }

    /// A delete the server accepted.
    pub fn deleted(&mut self, pod: &str, now: Instant) {
        self.pods.insert(pod.to_string(), (Expected::Gone, now));
    }

    /// A write that failed in a way that leaves its outcome unknown.
    pub fn write_failed(&mut self) {
        self.unknown_write = true;
    }

    /// Whether `cached` (the pool's pods in the cache) shows every write; drops what it shows and
    /// what expired.
    pub fn met_by(&mut self, cached: &[Pod], now: Instant) -> bool {
        let by_name: BTreeMap<String, &Pod> = cached.iter().map(|p| (p.name_any(), p)).collect();
        self.pods.retain(|name, (expected, since)| {
            now.duration_since(*since) < EXPECTATION_TTL
                && !shows(by_name.get(name).copied(), expected)
        });
        self.pods.is_empty() && !self.unknown_write
    }

    /// After a fresh list: the cache must catch up with `listed` for each pod written to.
    pub fn rebase(&mut self, listed: &[Pod], now: Instant) {
        self.unknown_write = false;
        for (name, (expected, since)) in self.pods.iter_mut() {
            *expected = match listed.iter().find(|p| p.name_any() == *name) {
                Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                    Expected::At(pod.resource_version().unwrap_or_default())
                }
                _ => Expected::Gone,
            };
            *since = now;
        }
    }
}

fn shows(cached: Option<&Pod>, expected: &Expected) -> bool {
    match (expected, cached) {
        (Expected::Gone, None) => true,
        (Expected::Gone, Some(pod)) => pod.metadata.deletion_timestamp.is_some(),
        (Expected::At(_), None) => false,
        (Expected::At(version), Some(pod)) => {
            at_or_after(&pod.resource_version().unwrap_or_default(), version)
        }
    }
}

/// resourceVersions are opaque to clients; etcd's (and the devcluster's) are counters, which order
/// them. Anything else is only ever equal.
pub fn at_or_after(cached: &str, written: &str) -> bool {
    match (cached.parse::<u64>(), written.parse::<u64>()) {
        (Ok(cached), Ok(written)) => cached >= written,
        _ => cached == written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(name: &str, version: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn terminating(name: &str, version: &str) -> Pod {
        let mut pod = pod(name, version);
        pod.metadata.deletion_timestamp = Some(Time(Default::default()));
        pod
    }

    #[test]
    fn nothing_written_trusts_the_cache() {
        let mut expectations = PodExpectations::default();
        assert!(expectations.met_by(&[], Instant::now()));
    }

    #[test]
    fn a_created_pod_is_expected_until_the_cache_holds_it_at_that_version_or_later() {
        let now = Instant::now();
        let mut expectations = PodExpectations::default();
        expectations.written(&pod("w-1", "12"), now);
        assert!(!expectations.met_by(&[], now), "not in the cache yet");
        assert!(
            !expectations.met_by(&[pod("w-1", "11")], now),
            "an older copy"
        );
        assert!(expectations.met_by(&[pod("w-1", "14")], now));
        assert!(expectations.met_by(&[], now), "met once, forgotten");
    }

    #[test]
    fn a_deleted_pod_is_expected_gone_or_terminating() {
        let now = Instant::now();
        let mut expectations = PodExpectations::default();
        expectations.deleted("w-1", now);
        assert!(!expectations.met_by(&[pod("w-1", "12")], now));
        assert!(expectations.met_by(&[terminating("w-1", "13")], now));
        expectations.deleted("w-2", now);
        assert!(expectations.met_by(&[], now));
    }

    #[test]
    fn versions_that_are_not_counters_must_be_equal() {
        assert!(at_or_after("abc", "abc"));
        assert!(!at_or_after("abd", "abc"));
        assert!(!at_or_after("9", "10"), "compared as numbers, not text");
    }

    #[test]
    fn a_failed_write_is_only_cleared_by_a_fresh_list() {
        let now = Instant::now();
        let mut expectations = PodExpectations::default();
        expectations.write_failed();
        assert!(!expectations.met_by(&[], now));
        expectations.rebase(&[], now);
        assert!(expectations.met_by(&[], now));
    }

    #[test]
    fn a_fresh_list_becomes_what_the_cache_must_catch_up_with() {
        let now = Instant::now();
        let mut expectations = PodExpectations::default();
        expectations.written(&pod("w-1", "12"), now);
        expectations.written(&pod("w-2", "13"), now);
        // Since the writes, w-1 changed again and w-2 was deleted.
        expectations.rebase(&[pod("w-1", "20")], now);
        assert!(!expectations.met_by(&[pod("w-1", "12"), pod("w-2", "13")], now));
        assert!(!expectations.met_by(&[pod("w-1", "20"), pod("w-2", "13")], now));
        assert!(expectations.met_by(&[pod("w-1", "20")], now));
    }

    #[test]
    fn an_expectation_the_cache_never_meets_expires() {
        let now = Instant::now();
        let mut expectations = PodExpectations::default();
        expectations.written(&pod("w-1", "a"), now);
        assert!(!expectations.met_by(&[pod("w-1", "b")], now));
        let later = now + EXPECTATION_TTL;
        assert!(expectations.met_by(&[pod("w-1", "b")], later));
    }
}
