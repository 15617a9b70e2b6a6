//! What the pod cache keeps of a pod: what the operator reads (metadata, status, and each
//! container's name and environment variable names, for the legacy pool key check). The rest of a
//! worker pod's spec (volumes, probes, resources, arguments, environment values) was most of a
//! cached pod's memory, and an environment value may be a credential.
//!
//! A cached pod is only read, never written back; every write is a patch of named fields.

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};

use crate::watch_cache::without_managed_fields;

/// Trims `pod` in place to what the operator reads.
pub fn trim_pod(pod: &mut Pod) {
    without_managed_fields(pod);
    if let Some(spec) = pod.spec.as_mut() {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(names_only)
            .collect();
        *spec = PodSpec {
            containers,
            ..PodSpec::default()
        };
    }
}

fn names_only(container: Container) -> Container {
    let env = container.env.map(|env| {
        env.into_iter()
            .map(|e| EnvVar {
                name: e.name,
                ..EnvVar::default()
            })
            .collect()
    });
    Container {
        name: container.name,
        env,
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;
    use crate::pool::worker_pod;
    use crate::relay::directory::{credential_of, pod_facts};
    use capsule_crds::CapsulePool;
    use serde_json::json;

    fn worker(legacy: bool) -> Pod {
        let pool: CapsulePool = serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"template": {"image": "capsule-worker:dev"}},
        }))
        .unwrap();
        let mut pod = worker_pod::build(&pool, &OperatorConfig::default(), "p-a");
        pod.metadata.resource_version = Some("7".into());
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert("capsule.dev/session".into(), "s".into());
        let annotations = pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert("capsule.dev/session-token-sha256".into(), "h".into());
        if legacy {
            let env = pod.spec.as_mut().unwrap().containers[0]
                .env
                .get_or_insert_with(Vec::new);
            env.push(EnvVar {
                name: "CAPSULE_POOL_TOKEN".into(),
                value: Some("the-pool-key".into()),
                ..EnvVar::default()
            });
        }
        pod.status = serde_json::from_value(json!({
            "phase": "Running", "podIP": "10.0.0.9",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "worker", "ready": true, "restartCount": 0,
                                   "image": "i", "imageID": "", "state": {"running": {}}}],
        }))
        .unwrap();
        pod
    }

    #[test]
    fn a_trimmed_pod_answers_every_question_the_operator_asks_as_the_full_one_does() {
        for legacy in [false, true] {
            let full = worker(legacy);
            let mut trimmed = full.clone();
            trim_pod(&mut trimmed);
            assert_eq!(pod_facts(&trimmed), pod_facts(&full), "legacy {legacy}");
            assert_eq!(credential_of("k", &trimmed), credential_of("k", &full));
            assert_eq!(trimmed.metadata, full.metadata);
            assert_eq!(trimmed.status, full.status);
        }
    }

    #[test]
    fn a_trimmed_pod_keeps_no_environment_value_and_is_much_smaller() {
        let full = worker(true);
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        let text = serde_json::to_string(&trimmed).unwrap();
        assert!(!text.contains("the-pool-key"), "{text}");
        let full_len = serde_json::to_string(&full).unwrap().len();
        assert!(
            text.len() * 2 < full_len,
            "{} of {full_len} bytes kept",
            text.len()
        );
    }
}
