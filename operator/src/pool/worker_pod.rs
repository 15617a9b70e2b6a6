//! The worker pod a pool's template turns into: a `worker` and a `sidecar` container sharing an
//! emptyDir for the trace socket, with the environment contract of capsule-worker and capsule-sidecar.

use std::collections::BTreeMap;

use capsule_crds::{CapsulePool, ImagePullPolicy, WorkerTemplate};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodSpec, Probe, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

pub(super) mod env;
mod interpreter;

use super::{checkpoint_store, pod_security};
use crate::config::OperatorConfig;
use crate::labels;

/// The name of the worker container in every worker pod.
pub(super) const WORKER_CONTAINER: &str = "worker";
/// Where both containers see the shared emptyDir.
const RUN_DIR: &str = "/var/run/capsule";
/// The sidecar's trace socket inside [`RUN_DIR`].
const TRACE_SOCKET: &str = "/var/run/capsule/trace.sock";
const RUN_VOLUME: &str = "capsule-run";

/// A short hash of everything in the spec that shapes a worker pod; a pod whose hash differs is
/// outdated and replaced when it is not bound.
pub(super) fn template_hash(pool: &CapsulePool) -> String {
    let spec = &pool.spec;
    let shaping = serde_json::json!({
        // Bumped when the operator changes the pod it builds (2: restricted security context,
        // token in the sidecar only; 3: a credential per worker; 4: checkpoint store; 5: the
        // interpreter container), so idle workers of the old shape are replaced on upgrade.
        "podShape": 5,
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
pub(super) fn worker_labels(pool: &CapsulePool, hash: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = pool.spec.template.labels.clone();
    out.insert(labels::POOL.into(), pool.name_any());
    out.insert(labels::TEMPLATE_HASH.into(), hash.into());
    out.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    out.insert(labels::NAME.into(), "capsule-worker".into());
    out.insert(labels::COMPONENT.into(), "worker".into());
    out
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

pub(super) fn pull_policy(p: Option<ImagePullPolicy>) -> Option<String> {
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
    let template = &pool.spec.template;
    let checkpoints = checkpoint_store::access(pool);
    let (checkpoint_volume, checkpoint_mount) = checkpoints.volume.unzip();
    let (run_volume, run_mount) = run_volume();
    let (scratch_volume, scratch_mount) = pod_security::scratch_volume();
    let (api_volume, api_mount) = pod_security::sidecar_api_access();

    let own_interpreter = interpreter::own_interpreter(template, &scratch_mount);

    let mut worker_mounts: Vec<VolumeMount> = [run_mount.clone(), scratch_mount]
        .into_iter()
        .chain(checkpoint_mount)
        .collect();
    let mut worker_env = env::worker_env(pool, config, pod_name, checkpoints.env);
    let mut volumes: Vec<Volume> = [run_volume, scratch_volume, api_volume]
        .into_iter()
        .chain(checkpoint_volume)
        .collect();
    let mut interpreter_container = None;
    if let Some(own) = own_interpreter {
        worker_mounts.push(own.worker_mount);
        worker_env.push(own.worker_env);
        volumes.push(own.volume);
        interpreter_container = Some(own.container);
    }
    let sidecar_env = env::sidecar_env(pool, pod_name);
    let containers = [
        worker_container(template, config, worker_env, worker_mounts),
        sidecar_container(template, config, sidecar_env, vec![run_mount, api_mount]),
    ]
    .into_iter()
    .chain(interpreter_container)
    .collect();
    Pod {
        metadata: metadata(pool, pod_name),
        spec: Some(pod_spec(template, containers, volumes)),
        status: None,
    }
}

fn metadata(pool: &CapsulePool, pod_name: &str) -> ObjectMeta {
    let template = &pool.spec.template;
    let owner = pool
        .controller_owner_ref(&())
        .expect("a stored pool has a uid");
    ObjectMeta {
        name: Some(pod_name.to_string()),
        namespace: pool.namespace(),
        labels: Some(worker_labels(pool, &template_hash(pool))),
        annotations: (!template.annotations.is_empty()).then(|| template.annotations.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

/// The in-memory emptyDir the worker and the sidecar share for the trace socket.
fn run_volume() -> (Volume, VolumeMount) {
    pod_security::empty_dir(RUN_VOLUME, RUN_DIR, Some("Memory"))
}

fn tcp_port(name: &str, port: i32) -> Option<Vec<ContainerPort>> {
    Some(vec![ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }])
}

fn worker_container(
    template: &WorkerTemplate,
    config: &OperatorConfig,
    env: Vec<EnvVar>,
    volume_mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: WORKER_CONTAINER.into(),
        image: template.image.clone(),
        image_pull_policy: pull_policy(template.image_pull_policy),
        env: Some(env),
        ports: tcp_port("execute", config.worker_port),
        // Ready only once the interpreter is up and warm-up has run: Ready means Idle-capable.
        readiness_probe: Some(http_probe("/readyz", config.worker_port, 1, 1)),
        liveness_probe: Some(http_probe("/healthz", config.worker_port, 10, 3)),
        resources: template.resources.clone(),
        volume_mounts: Some(volume_mounts),
        security_context: Some(pod_security::container_security_context(template)),
        ..Default::default()
    }
}

fn sidecar_container(
    template: &WorkerTemplate,
    config: &OperatorConfig,
    env: Vec<EnvVar>,
    volume_mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: "sidecar".into(),
        image: Some(
            template
                .sidecar_image
                .clone()
                .unwrap_or_else(|| config.default_sidecar_image.clone()),
        ),
        image_pull_policy: pull_policy(template.image_pull_policy),
        env: Some(env),
        ports: tcp_port("introspection", config.sidecar_port),
        resources: template.sidecar_resources.clone(),
        volume_mounts: Some(volume_mounts),
        security_context: Some(pod_security::container_security_context(template)),
        ..Default::default()
    }
}

fn pod_spec(
    template: &WorkerTemplate,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        containers,
        volumes: Some(volumes),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(template.termination_grace_period_seconds),
        node_selector: (!template.node_selector.is_empty()).then(|| template.node_selector.clone()),
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
    }
}

/// A fresh name for a worker of `pool`, as `generateName` would make it: the pool's name cut so
/// the result stays a valid label value, `-`, five random characters of the same alphabet. The
/// operator names pods itself because each pod's credential Secret is created before the pod.
pub(super) fn new_worker_name(pool: &str) -> String {
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
pub(super) fn is_current(pod: &Pod, hash: &str) -> bool {
    pod.labels().get(labels::TEMPLATE_HASH).map(String::as_str) == Some(hash)
}

/// Whether `pod` is controlled by this pool object (same uid), as opposed to an older pool of the
/// same name or nobody.
pub(super) fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}
