//! The worker pod a pool's template turns into: a `worker` and a `sidecar` container sharing an
//! emptyDir for the trace socket, with the environment contract of capsule-worker and capsule-sidecar.

use std::collections::BTreeMap;

/// The name of the worker container in every worker pod.
pub const WORKER_CONTAINER: &str = "worker";

use capsule_crds::{CapsulePool, ImagePullPolicy, OtlpProtocol, Redaction};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, PodSpec, Probe, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::{checkpoint_store, pod_security};
use crate::config::OperatorConfig;
use crate::labels;

/// Where both containers see the shared emptyDir.
pub const RUN_DIR: &str = "/var/run/capsule";
/// The sidecar's trace socket inside [`RUN_DIR`].
pub const TRACE_SOCKET: &str = "/var/run/capsule/trace.sock";
const RUN_VOLUME: &str = "capsule-run";

/// A short hash of everything in the spec that shapes a worker pod; a pod whose hash differs is
/// outdated and replaced when it is not bound.
pub fn template_hash(pool: &CapsulePool) -> String {
    let spec = &pool.spec;
    let shaping = serde_json::json!({
        // Bumped when the operator changes the pod it builds (2: restricted security context,
        // token in the sidecar only; 3: a credential per worker; 4: checkpoint store), so idle
        // workers of the old shape are replaced on upgrade.
        "podShape": 4,
        "template": spec.template,
        "warmup": spec.warmup,
        "heartbeat": spec.heartbeat,
        "executor": spec.executor,
        "tracing": spec.tracing,
        "introspection": spec.introspection,
        "checkpoints": spec.checkpoints,
        "persistence": spec.sessions.persistence,
    });
    let digest = Sha256::digest(shaping.to_string().as_bytes());
    hex::encode(&digest[..5])
}

/// Labels on every worker pod of `pool`.
pub fn worker_labels(pool: &CapsulePool, hash: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = pool.spec.template.labels.clone();
    out.insert(labels::POOL.into(), pool.name_any());
    out.insert(labels::TEMPLATE_HASH.into(), hash.into());
    out.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    out.insert(labels::NAME.into(), "capsule-worker".into());
    out.insert(labels::COMPONENT.into(), "worker".into());
    out
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// The pod's own credential, from the Secret created for it (see `token::worker_credential_secret`).
fn worker_token_env(pod: &str) -> EnvVar {
    EnvVar {
        name: "CAPSULE_WORKER_TOKEN".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: labels::worker_credential_secret(pod),
                key: labels::TOKEN_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

fn redaction_str(r: Redaction) -> &'static str {
    match r {
        Redaction::None => "None",
        Redaction::Hash => "Hash",
        Redaction::Drop => "Drop",
    }
}

fn http_probe(path: &str, port: i32, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn pull_policy(p: Option<ImagePullPolicy>) -> Option<String> {
    p.map(|p| {
        match p {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
        .to_string()
    })
}

/// Builds the pod `pod_name` for a new worker of `pool`. The caller has checked the spec (see
/// `spec_check`), so the image is present, and has created the pod's credential Secret.
pub fn build(pool: &CapsulePool, config: &OperatorConfig, pod_name: &str) -> Pod {
    let spec = &pool.spec;
    let name = pool.name_any();
    let hash = template_hash(pool);
    let downward = [
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
    ];

    let mut worker_env: Vec<EnvVar> = downward.to_vec();
    worker_env.extend([
        env("CAPSULE_POOL", name.clone()),
        env("CAPSULE_HEARTBEAT_URL", config.heartbeat_url.clone()),
        worker_token_env(pod_name),
        env(
            "CAPSULE_HEARTBEAT_INTERVAL_SECONDS",
            spec.heartbeat.interval_seconds.to_string(),
        ),
        env(
            "CAPSULE_OUTPUT_QUEUE_CAPACITY",
            spec.executor.output_queue_capacity.to_string(),
        ),
        env("CAPSULE_BACKPRESSURE", spec.executor.backpressure.as_str()),
        env(
            "CAPSULE_DRAIN_TIMEOUT_MS",
            spec.executor.drain_timeout_ms.to_string(),
        ),
        env(
            "CAPSULE_INPUT_TIMEOUT_MS",
            (spec.executor.input_timeout_seconds * 1000).to_string(),
        ),
        env(
            "CAPSULE_PROMISE_TIMEOUT_MS",
            (spec.executor.promise_timeout_seconds * 1000).to_string(),
        ),
        env(
            "CAPSULE_CANCEL_GRACE_MS",
            spec.executor.cancel_grace_ms.to_string(),
        ),
        env(
            "CAPSULE_EXECUTION_QUEUE_LIMIT",
            spec.executor.execution_queue_limit.to_string(),
        ),
    ]);
    if let Some(warmup) = &spec.warmup {
        worker_env.push(env("CAPSULE_WARMUP_CODE", warmup.code.clone()));
    }
    if spec.tracing.enabled {
        worker_env.push(env("CAPSULE_TRACE_SOCKET", TRACE_SOCKET));
    }
    worker_env.push(env("CAPSULE_SCRATCH_DIR", pod_security::SCRATCH_DIR));
    let checkpoints = checkpoint_store::access(pool);
    worker_env.extend(checkpoints.env);
    worker_env.extend(spec.template.env.iter().cloned());

    let mut sidecar_env: Vec<EnvVar> = downward.to_vec();
    sidecar_env.extend([
        env("CAPSULE_POOL", name.clone()),
        worker_token_env(pod_name),
        env("CAPSULE_TRACE_SOCKET", TRACE_SOCKET),
        env(
            "CAPSULE_TRACE_MAX_EVENTS",
            spec.tracing.max_events.to_string(),
        ),
        env(
            "CAPSULE_TRACE_MAX_AGE_SECONDS",
            spec.tracing.max_age_seconds.to_string(),
        ),
        env(
            "CAPSULE_TRACE_MAX_BYTES",
            spec.tracing.max_bytes.to_string(),
        ),
        env(
            "CAPSULE_TRACE_REDACTION",
            redaction_str(spec.tracing.redaction),
        ),
        env(
            "CAPSULE_INTROSPECTION_VIEWS",
            if spec.introspection.enabled {
                spec.introspection
                    .views
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                String::new()
            },
        ),
        env(
            "CAPSULE_INTROSPECTION_REDACTION",
            redaction_str(spec.introspection.redaction),
        ),
        env("CAPSULE_AUDIT", spec.introspection.audit.to_string()),
    ]);
    if let Some(endpoint) = &spec.tracing.otlp_endpoint {
        sidecar_env.push(env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()));
        sidecar_env.push(env(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            match spec.tracing.otlp_protocol {
                OtlpProtocol::HttpProtobuf => "http/protobuf",
                OtlpProtocol::Grpc => "grpc",
            },
        ));
    }

    let run_mount = VolumeMount {
        name: RUN_VOLUME.into(),
        mount_path: RUN_DIR.into(),
        ..Default::default()
    };
    let template = &spec.template;
    let (scratch_volume, scratch_mount) = pod_security::scratch_volume();
    let (api_volume, api_mount) = pod_security::sidecar_api_access();
    let container_security = Some(pod_security::container_security_context(template));
    let worker = Container {
        name: WORKER_CONTAINER.into(),
        image: template.image.clone(),
        image_pull_policy: pull_policy(template.image_pull_policy),
        env: Some(worker_env),
        ports: Some(vec![ContainerPort {
            name: Some("execute".into()),
            container_port: config.worker_port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Ready only once the interpreter is up and warm-up has run: Ready means Idle-capable.
        readiness_probe: Some(http_probe("/readyz", config.worker_port, 1, 1)),
        liveness_probe: Some(http_probe("/healthz", config.worker_port, 10, 3)),
        resources: template.resources.clone(),
        volume_mounts: Some(
            [run_mount.clone(), scratch_mount]
                .into_iter()
                .chain(checkpoints.volume.as_ref().map(|(_, m)| m.clone()))
                .collect(),
        ),
        security_context: container_security.clone(),
        ..Default::default()
    };
    let sidecar = Container {
        name: "sidecar".into(),
        image: Some(
            template
                .sidecar_image
                .clone()
                .unwrap_or_else(|| config.default_sidecar_image.clone()),
        ),
        image_pull_policy: pull_policy(template.image_pull_policy),
        env: Some(sidecar_env),
        ports: Some(vec![ContainerPort {
            name: Some("introspection".into()),
            container_port: config.sidecar_port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: template.sidecar_resources.clone(),
        volume_mounts: Some(vec![run_mount, api_mount]),
        security_context: container_security,
        ..Default::default()
    };

    let owner = pool
        .controller_owner_ref(&())
        .expect("a stored pool has a uid");
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.to_string()),
            namespace: pool.namespace(),
            labels: Some(worker_labels(pool, &hash)),
            annotations: (!template.annotations.is_empty()).then(|| template.annotations.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![worker, sidecar],
            volumes: Some(
                [
                    Volume {
                        name: RUN_VOLUME.into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: Some("Memory".into()),
                            size_limit: None,
                        }),
                        ..Default::default()
                    },
                    scratch_volume,
                    api_volume,
                ]
                .into_iter()
                .chain(checkpoints.volume.map(|(v, _)| v))
                .collect(),
            ),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(template.termination_grace_period_seconds),
            node_selector: (!template.node_selector.is_empty())
                .then(|| template.node_selector.clone()),
            tolerations: (!template.tolerations.is_empty()).then(|| template.tolerations.clone()),
            affinity: template.affinity.clone(),
            priority_class_name: template.priority_class_name.clone(),
            service_account_name: template.service_account_name.clone(),
            // The token goes to the sidecar alone (see `pod_security::sidecar_api_access`).
            automount_service_account_token: Some(false),
            security_context: Some(pod_security::pod_security_context(template)),
            runtime_class_name: template.runtime_class_name.clone(),
            image_pull_secrets: (!template.image_pull_secrets.is_empty())
                .then(|| template.image_pull_secrets.clone()),
            enable_service_links: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

/// A fresh name for a worker of `pool`, as `generateName` would make it: the pool's name cut so
/// the result stays a valid label value, `-`, five random characters of the same alphabet. The
/// operator names pods itself because each pod's credential Secret is created before the pod.
pub fn new_worker_name(pool: &str) -> String {
    const MAX_BASE: usize = 57;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = if pool.len() <= MAX_BASE {
        pool
    } else {
        &pool[..MAX_BASE]
    };
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::Rng::random_range(&mut rng, 0..ALPHABET.len())] as char)
        .collect();
    format!("{base}-{suffix}")
}

/// Whether `pod` was built from the pool's current template.
pub fn is_current(pod: &Pod, hash: &str) -> bool {
    pod.labels().get(labels::TEMPLATE_HASH).map(String::as_str) == Some(hash)
}

/// Whether `pod` is controlled by this pool object (same uid), as opposed to an older pool of the
/// same name or nobody.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}
