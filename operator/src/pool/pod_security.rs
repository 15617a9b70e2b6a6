//! What keeps user code in a worker pod away from everything but its own worker: the restricted Pod
//! Security profile by default, a scratch volume for the read-only root filesystem, and the
//! ServiceAccount token projected into the sidecar container alone.

use capsule_crds::WorkerTemplate;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile,
    EmptyDirVolumeSource, KeyToPath, ObjectFieldSelector, PodSecurityContext,
    ProjectedVolumeSource, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};

/// Where the worker container's writable scratch volume is (interpreters' working directories).
pub const SCRATCH_DIR: &str = "/var/run/capsule-scratch";
const SCRATCH_VOLUME: &str = "capsule-scratch";
/// Where a Kubernetes client looks for the in-cluster token, CA and namespace.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const API_ACCESS_VOLUME: &str = "capsule-sidecar-api-access";
/// Lifetime the kubelet requests for the sidecar's token (it refreshes it at 80 %).
const TOKEN_SECONDS: i64 = 3607;

fn runtime_default_seccomp() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    })
}

/// The pod's security context: the template's, or the restricted profile's pod-level fields.
pub fn pod_security_context(template: &WorkerTemplate) -> PodSecurityContext {
    template
        .security_context
        .clone()
        .unwrap_or_else(|| PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: runtime_default_seccomp(),
            ..Default::default()
        })
}

/// Each container's security context: the template's, or the restricted profile's.
pub fn container_security_context(template: &WorkerTemplate) -> SecurityContext {
    template
        .container_security_context
        .clone()
        .unwrap_or_else(|| SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            seccomp_profile: runtime_default_seccomp(),
            ..Default::default()
        })
}

/// The worker container's scratch volume (the root filesystem is read-only).
pub fn scratch_volume() -> (Volume, VolumeMount) {
    empty_dir(SCRATCH_VOLUME, SCRATCH_DIR, None)
}

/// An emptyDir `name` (on `medium`, e.g. `Memory`; default: the node's disk) and its mount at
/// `path`.
pub fn empty_dir(name: &str, path: &str, medium: Option<&str>) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: None,
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    (volume, mount)
}

/// The ServiceAccount token, CA and namespace, as the kubelet's automount would project them, for
/// the sidecar's TokenReview, SubjectAccessReview and pool reads. The pod sets
/// `automountServiceAccountToken: false`, so the worker container gets no token.
pub fn sidecar_api_access() -> (Volume, VolumeMount) {
    let sources = vec![
        VolumeProjection {
            service_account_token: Some(ServiceAccountTokenProjection {
                path: "token".into(),
                expiration_seconds: Some(TOKEN_SECONDS),
                audience: None,
            }),
            ..Default::default()
        },
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: "kube-root-ca.crt".into(),
                items: Some(vec![KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    mode: None,
                }]),
                optional: None,
            }),
            ..Default::default()
        },
        VolumeProjection {
            downward_api: Some(DownwardAPIProjection {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "namespace".into(),
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: "metadata.namespace".into(),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
    ];
    let volume = Volume {
        name: API_ACCESS_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(sources),
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: API_ACCESS_VOLUME.into(),
        mount_path: SERVICE_ACCOUNT_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}
