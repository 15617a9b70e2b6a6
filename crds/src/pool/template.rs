//! `spec.template`: the worker pod's images, resources, scheduling and security contexts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements,
    SecurityContext, Toleration,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The worker pod template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.image) && self.image.matches('[^ \\t]')").message("spec.template.image is not set: name the worker image, for example capsule-worker:0.1.0").field_path(".image"))]
#[x_kube(validation = Rule::new("!has(self.env) || self.env.all(e, !e.name.startsWith('CAPSULE_') && !(e.name in ['POD_NAME', 'POD_NAMESPACE', 'POD_IP']))").message("spec.template.env names CAPSULE_* and POD_NAME, POD_NAMESPACE, POD_IP are reserved for the operator: rename the variable").field_path(".env"))]
#[x_kube(validation = Rule::new("!has(self.interpreter) || self.interpreter.placement != 'OwnContainer' || ((!has(self.securityContext) || !has(self.securityContext.runAsUser) || self.securityContext.runAsUser != self.interpreter.runAsUser) && (!has(self.containerSecurityContext) || !has(self.containerSecurityContext.runAsUser) || self.containerSecurityContext.runAsUser != self.interpreter.runAsUser))").message("spec.template.interpreter.runAsUser is the worker's uid too: session code would run as the worker; choose another uid for the interpreter (default 65533)").field_path(".interpreter.runAsUser"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// Image of the `worker` container (runs capsule-worker and Python). Required: the API server
    /// refuses a pool without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Image of the `sidecar` container (trace buffer and introspection). Defaults to the
    /// operator's `--sidecar-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub sidecar_image: Option<String>,

    /// Image pull policy for both containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Resources of the sidecar container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_resources: Option<ResourceRequirements>,

    /// Extra environment variables for the worker container (names starting with CAPSULE_ and the
    /// POD_* downward-API names are reserved and refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Extra labels on worker pods (the operator's own `capsule.dev/*` labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations on worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Node selector for worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations for worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules for worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Priority class of worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Service account the worker pods run as (default: the namespace's `default`). Its token
    /// is mounted in the sidecar container only, never where user code runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Runtime class of worker pods, for a sandboxed runtime (gVisor, Kata Containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub runtime_class_name: Option<String>,

    /// Secrets for pulling the worker and sidecar images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Pod security context; replaces the restricted default (runAsNonRoot, seccomp
    /// RuntimeDefault). Set `runAsUser` here for an image whose user is not numeric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// Security context of both containers; replaces the restricted default (no privilege
    /// escalation, every capability dropped, read-only root filesystem, runAsNonRoot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,

    /// Where session code runs; by default in a container of its own, under a uid of its own.
    #[serde(default)]
    pub interpreter: InterpreterTemplate,

    /// Seconds a worker gets to finish after SIGTERM before it is killed.
    #[serde(default = "default_grace_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: i64,
}

fn default_grace_seconds() -> i64 {
    30
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for WorkerTemplate {
    fn default() -> Self {
        Self {
            image: None,
            sidecar_image: None,
            image_pull_policy: None,
            resources: None,
            sidecar_resources: None,
            env: Vec::new(),
            runtime_class_name: None,
            image_pull_secrets: Vec::new(),
            security_context: None,
            container_security_context: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            priority_class_name: None,
            service_account_name: None,
            interpreter: InterpreterTemplate::default(),
            termination_grace_period_seconds: default_grace_seconds(),
        }
    }
}

/// `spec.template.interpreter`: where the Python interpreter that runs session code lives.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InterpreterTemplate {
    /// `OwnContainer` (default): a container `interpreter` in the worker pod, under `runAsUser`,
    /// with no credential, no token and no view of the worker's processes; its fork server talks
    /// to the worker over a socket in a volume the two share. `WorkerContainer`: the worker starts
    /// the interpreter itself, in its own container and under its own uid (one container fewer;
    /// session code can then signal the worker and reach what the worker's uid can).
    #[serde(default)]
    pub placement: InterpreterPlacement,

    /// uid and gid of the `interpreter` container; must differ from the worker's.
    #[serde(default = "default_interpreter_uid")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: i64,

    /// Resources of the `interpreter` container: session code's memory and CPU. Default: the
    /// worker container's `resources`, so limits set for session code keep bounding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_interpreter_uid() -> i64 {
    65533
}

impl Default for InterpreterTemplate {
    fn default() -> Self {
        Self {
            placement: InterpreterPlacement::default(),
            run_as_user: default_interpreter_uid(),
            resources: None,
        }
    }
}

/// Where the interpreter runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InterpreterPlacement {
    #[default]
    OwnContainer,
    WorkerContainer,
}

/// Image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}
