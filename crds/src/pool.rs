//! `CapsulePool`: a pool of pre-warmed Python workers and everything the operator reports about it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements,
    SecurityContext, Toleration,
};
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checkpoints::{CheckpointSpec, PersistenceSpec};

/// The most workers one pool may hold; the bound keeps a typo (`maxWorkers: 100000`) from
/// flooding a cluster.
pub const MAX_WORKERS_LIMIT: i32 = 1000;
/// How many per-worker rows `status.workers` carries at most; the rest are counted, not listed.
pub const MAX_WORKER_SUMMARIES: usize = 50;
/// The most entries in `status.pythonVersions`.
pub const MAX_PYTHON_VERSIONS: usize = 8;
/// Largest warm-up code accepted, in bytes.
pub const MAX_WARMUP_CODE_BYTES: u32 = 65_536;

/// A pool of pre-warmed Python execution workers.
///
/// The operator keeps `spec.replicas` workers idle and ready (warm), never runs more than
/// `spec.maxWorkers` in all, relays each worker's heartbeat into `status` and Prometheus, and recycles
/// workers that are unhealthy or worn out.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "capsule.dev",
    version = "v1alpha1",
    kind = "CapsulePool",
    namespaced,
    shortname = "cpool",
    category = "capsule",
    status = "CapsulePoolStatus",
    derive = "PartialEq",
    doc = "A pool of pre-warmed Python execution workers kept ready for CapsuleSessions.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.unbound",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Warm",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Idle workers the pool keeps ready"
    ),
    printcolumn(
        name = "Idle",
        type_ = "integer",
        json_path = ".status.idle",
        description = "Workers ready for a session"
    ),
    printcolumn(
        name = "Bound",
        type_ = "integer",
        json_path = ".status.bound",
        description = "Workers held by a session"
    ),
    printcolumn(
        name = "Unhealthy",
        type_ = "integer",
        json_path = ".status.unhealthy",
        description = "Workers with a stale heartbeat or a failed container"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.maxWorkers",
        description = "Most workers the pool may run",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the warm target is met"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the pool is or is not ready",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.sessions) || !has(self.sessions.persistence) || !self.sessions.persistence.enabled || (has(self.checkpoints) && self.checkpoints.store == 'Volume')").message("spec.sessions.persistence.enabled needs checkpoints that outlive a worker: set spec.checkpoints.store to Volume with a volume.claimName, or turn persistence off").field_path(".sessions.persistence.enabled"))]
#[x_kube(validation = Rule::new("self.maxWorkers >= self.replicas").message("maxWorkers must be at least replicas (the warm target): raise spec.maxWorkers or lower spec.replicas").field_path(".maxWorkers"))]
#[serde(rename_all = "camelCase")]
pub struct CapsulePoolSpec {
    /// Warm target: how many idle workers the pool keeps ready for new sessions.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// The most workers (idle, bound and starting together) the pool may run.
    #[serde(default = "default_max_workers")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_workers: i32,

    /// Seconds the pool keeps more unbound workers than it needs before removing the surplus.
    /// With `recycle.onRelease: Reset` every release returns a worker while its replacement is
    /// already warming; removing the surplus at once would cost a pod start and a deletion per
    /// session under steady load. 0 removes it at once. Lowering `replicas` applies at once.
    #[serde(default = "default_scale_down_delay_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_delay_seconds: i64,

    /// The worker pod template: images, resources and scheduling.
    #[serde(default)]
    pub template: WorkerTemplate,

    /// Code run in each new worker before it counts as idle (for example heavy imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupSpec>,

    /// How often workers report and when a silent worker counts as unhealthy.
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,

    /// Session behaviour: idle timeout and what happens on release.
    #[serde(default)]
    pub sessions: SessionPolicy,

    /// When a worker is worn out and gets replaced.
    #[serde(default)]
    pub recycle: RecycleSpec,

    /// Output streaming and input settings of each worker's executor.
    #[serde(default)]
    pub executor: ExecutorSpec,

    /// The trace buffer kept by each worker's sidecar and its OTLP export.
    #[serde(default)]
    pub tracing: TracingSpec,

    /// Which diagnostic views the sidecar serves to authorised callers.
    #[serde(default)]
    pub introspection: IntrospectionSpec,

    /// Prometheus series the operator exports for this pool.
    #[serde(default)]
    pub metrics: MetricsSpec,

    /// The NetworkPolicy the operator keeps around the pool's worker pods (on unless disabled).
    #[serde(default)]
    pub network_policy: PoolNetworkPolicySpec,

    /// Where session checkpoints are kept and how large they may be.
    #[serde(default)]
    pub checkpoints: CheckpointSpec,
}

fn default_replicas() -> i32 {
    1
}
fn default_max_workers() -> i32 {
    10
}
fn default_scale_down_delay_seconds() -> i64 {
    30
}

/// The worker pod template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.image) && self.image.matches('[^ \\t]')").message("spec.template.image is not set: name the worker image, for example capsule-worker:0.1.0").field_path(".image"))]
#[x_kube(validation = Rule::new("!has(self.env) || self.env.all(e, !e.name.startsWith('CAPSULE_') && !(e.name in ['POD_NAME', 'POD_NAMESPACE', 'POD_IP']))").message("spec.template.env names CAPSULE_* and POD_NAME, POD_NAMESPACE, POD_IP are reserved for the operator: rename the variable").field_path(".env"))]
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
            termination_grace_period_seconds: default_grace_seconds(),
        }
    }
}

/// Image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Warm-up run in every new worker before it counts as idle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WarmupSpec {
    /// Python code to run (for example `import numpy, pandas`). At most 64 KiB.
    #[schemars(length(min = 1, max = 65536))]
    pub code: String,

    /// Seconds the warm-up may take before the worker is marked unhealthy and replaced.
    #[serde(default = "default_warmup_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i64,
}

fn default_warmup_timeout() -> i64 {
    120
}

/// Heartbeat settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.stalenessSeconds > self.intervalSeconds").message("stalenessSeconds must be longer than intervalSeconds, or every worker would count as stale between two heartbeats").field_path(".stalenessSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatSpec {
    /// Seconds between two heartbeats of a worker.
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: i64,

    /// Seconds without a heartbeat after which a worker is Unhealthy and replaced.
    #[serde(default = "default_staleness")]
    #[schemars(range(min = 2, max = 3600))]
    pub staleness_seconds: i64,
}

fn default_heartbeat_interval() -> i64 {
    5
}
fn default_staleness() -> i64 {
    30
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_heartbeat_interval(),
            staleness_seconds: default_staleness(),
        }
    }
}

/// How sessions use workers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionPolicy {
    /// Seconds without an execution after which a session is released. 0 never releases.
    #[serde(default = "default_idle_timeout")]
    #[schemars(range(min = 0, max = 604800))]
    pub idle_timeout_seconds: i64,

    /// Seconds a session may wait for a worker before it fails with reason AcquireTimeout.
    #[serde(default = "default_acquire_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub acquire_timeout_seconds: i64,

    /// Whether a session moves to a new worker when its worker is lost.
    #[serde(default)]
    pub persistence: PersistenceSpec,
}

fn default_idle_timeout() -> i64 {
    1800
}
fn default_acquire_timeout() -> i64 {
    300
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout_seconds: default_idle_timeout(),
            acquire_timeout_seconds: default_acquire_timeout(),
            persistence: PersistenceSpec::default(),
        }
    }
}

/// When a worker is worn out. A worn-out worker is replaced once it is idle, never mid-session.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecycleSpec {
    /// Replace a worker after this many executions. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_executions: Option<i64>,

    /// Replace a worker whose resident memory (worker and interpreter) exceeds this many bytes.
    /// Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub max_rss_bytes: Option<i64>,

    /// Replace a worker older than this many seconds. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub max_age_seconds: Option<i64>,

    /// What happens to a worker when its session is released: `Reset` swaps in a fresh, already
    /// warmed interpreter process and returns the worker to the pool; `Replace` deletes the pod and
    /// warms a new one.
    #[serde(default)]
    pub on_release: ReleaseAction,
}

impl Default for RecycleSpec {
    fn default() -> Self {
        Self {
            max_executions: None,
            max_rss_bytes: None,
            max_age_seconds: None,
            on_release: ReleaseAction::Reset,
        }
    }
}

/// What a released worker becomes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReleaseAction {
    #[default]
    Reset,
    Replace,
}

/// What the executor does when its bounded output queue is full.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Wait for room: loses nothing, slows the code that prints.
    #[default]
    Block,
    /// Drop the newest output (counted).
    DropNew,
    /// Drop the oldest queued output (counted).
    DropOldest,
    /// Fail the execution with a clear error.
    Error,
}

impl BackpressurePolicy {
    /// The spelling used in the CRD, in env vars and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "Block",
            Self::DropNew => "DropNew",
            Self::DropOldest => "DropOldest",
            Self::Error => "Error",
        }
    }
}

/// Executor settings of each worker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorSpec {
    /// Output chunks the queue between interpreter and client holds.
    #[serde(default = "default_queue_capacity")]
    #[schemars(range(min = 1, max = 1000000))]
    pub output_queue_capacity: i64,

    /// What happens when the output queue is full.
    #[serde(default)]
    pub backpressure: BackpressurePolicy,

    /// Milliseconds the executor waits for queued output to reach the client after the code ends
    /// before failing with OutputDrainTimeout.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = 600000))]
    pub drain_timeout_ms: i64,

    /// Seconds an `input()` request waits for an answer before it fails inside the code.
    #[serde(default = "default_input_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub input_timeout_seconds: i64,

    /// Seconds a promise created without its own timeout (`capsule.promise(id)`) waits to be
    /// resolved or rejected through the API before it fails inside the code with PromiseTimeout.
    #[serde(default = "default_promise_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub promise_timeout_seconds: i64,

    /// Milliseconds a cancelled execution gets to stop after KeyboardInterrupt before the
    /// interpreter is killed and restarted.
    #[serde(default = "default_cancel_grace")]
    #[schemars(range(min = 1, max = 600000))]
    pub cancel_grace_ms: i64,

    /// Executions that may wait behind the running one; past it the worker answers 429.
    #[serde(default = "default_execution_queue_limit")]
    #[schemars(range(min = 1, max = 1024))]
    pub execution_queue_limit: i64,
}

fn default_queue_capacity() -> i64 {
    1024
}
fn default_drain_timeout() -> i64 {
    5000
}
fn default_input_timeout() -> i64 {
    300
}
fn default_promise_timeout() -> i64 {
    60
}
fn default_cancel_grace() -> i64 {
    2000
}
fn default_execution_queue_limit() -> i64 {
    8
}

impl Default for ExecutorSpec {
    fn default() -> Self {
        Self {
            output_queue_capacity: default_queue_capacity(),
            backpressure: BackpressurePolicy::default(),
            drain_timeout_ms: default_drain_timeout(),
            input_timeout_seconds: default_input_timeout(),
            promise_timeout_seconds: default_promise_timeout(),
            cancel_grace_ms: default_cancel_grace(),
            execution_queue_limit: default_execution_queue_limit(),
        }
    }
}

/// How identifiers in traces and introspection answers are protected.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Redaction {
    /// Kept as they are.
    None,
    /// Replaced by a keyed hash, stable within the pool so the same id still correlates.
    #[default]
    Hash,
    /// Removed.
    Drop,
}

/// OTLP transport.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[default]
    HttpProtobuf,
    Grpc,
}

/// The sidecar's trace buffer and export.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// Whether workers send trace events to their sidecar.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Trace events the buffer keeps; the oldest go first (counted).
    #[serde(default = "default_trace_max_events")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_events: i64,

    /// Seconds an event stays in the buffer.
    #[serde(default = "default_trace_max_age")]
    #[schemars(range(min = 1, max = 604800))]
    pub max_age_seconds: i64,

    /// Hard cap on the buffer's memory, in bytes.
    #[serde(default = "default_trace_max_bytes")]
    #[schemars(range(min = 65536, max = 1073741824))]
    pub max_bytes: i64,

    /// How session and execution identifiers are protected in traces.
    #[serde(default)]
    pub redaction: Redaction,

    /// OTLP endpoint to export spans to (for example `http://otel-collector:4318`). Unset: the
    /// sidecar's own OTEL_EXPORTER_OTLP_ENDPOINT, or no export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport.
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
}

fn default_true() -> bool {
    true
}
fn default_trace_max_events() -> i64 {
    10_000
}
fn default_trace_max_age() -> i64 {
    3600
}
fn default_trace_max_bytes() -> i64 {
    16 * 1024 * 1024
}

impl Default for TracingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_events: default_trace_max_events(),
            max_age_seconds: default_trace_max_age(),
            max_bytes: default_trace_max_bytes(),
            redaction: Redaction::default(),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
        }
    }
}

/// A diagnostic view of the sidecar.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum IntrospectionView {
    Traces,
    Promises,
    Namespace,
    Counters,
    Pool,
}

/// Policy-gated introspection: every view is off unless listed here and `enabled` is true.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntrospectionSpec {
    /// Master switch.
    #[serde(default)]
    pub enabled: bool,

    /// The views served to callers that RBAC allows `get` on `capsulepools/introspection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub views: Vec<IntrospectionView>,

    /// How identifiers are protected in answers.
    #[serde(default)]
    pub redaction: Redaction,

    /// Write one audit record per request (allowed or denied).
    #[serde(default = "default_true")]
    pub audit: bool,
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for IntrospectionSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            views: Vec::new(),
            redaction: Redaction::default(),
            audit: default_true(),
        }
    }
}

/// Prometheus series for this pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Export per-worker series (labelled by pod). Off by default: it multiplies series by the
    /// pool's size.
    #[serde(default)]
    pub per_worker: bool,
}

/// The `networking.k8s.io/v1` NetworkPolicy `<pool>-workers` the operator keeps for the pool's
/// worker pods (selected by `capsule.dev/pool=<pool>`), owned by the pool and deleted with it.
///
/// Ingress: only the operator's pods and the `clients` below reach the worker's execute port and
/// the sidecar's introspection port; nothing else reaches the pods. Egress: only the operator's
/// heartbeat endpoint, DNS (port 53, UDP and TCP) and the `egress` rules below. The policy is
/// enforced only where the cluster's network plugin enforces NetworkPolicies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolNetworkPolicySpec {
    /// Whether the operator keeps the NetworkPolicy. `false` deletes the one it made earlier and
    /// leaves the pods' traffic to the namespace's own policies.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Who besides the operator may reach the worker's execute port and the sidecar's
    /// introspection port: standard NetworkPolicy peers (`podSelector`, `namespaceSelector`,
    /// `ipBlock`), for example the pods of the application that runs sessions, or the namespace
    /// of the people and agents who introspect the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub clients: Vec<NetworkPolicyPeer>,

    /// More egress the worker pods need besides the heartbeat endpoint and DNS: standard
    /// NetworkPolicy egress rules (`to` peers and `ports`), for example the OTLP collector of
    /// `tracing.otlpEndpoint`, or the Kubernetes API server's addresses (an `ipBlock` on port 443
    /// or 6443) which the sidecar calls when `introspection.enabled` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for PoolNetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            clients: Vec::new(),
            egress: Vec::new(),
        }
    }
}

/// What the operator observes of a pool.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CapsulePoolStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Label selector of the pool's unbound workers, the pods `unbound` counts (for the scale
    /// subresource and autoscalers: a bound worker belongs to its session, not to the warm pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Workers no session holds (starting, warming or idle): the warm pool `spec.replicas` keeps
    /// and the scale subresource reports.
    #[serde(default)]
    pub unbound: i32,

    /// All workers of the pool, whatever their phase.
    #[serde(default)]
    pub workers: i32,
    /// Pods created, containers not yet running.
    #[serde(default)]
    pub starting: i32,
    /// Running, warm-up not finished.
    #[serde(default)]
    pub warming: i32,
    /// Ready and free for a session.
    #[serde(default)]
    pub idle: i32,
    /// Held by a session.
    #[serde(default)]
    pub bound: i32,
    /// Stale heartbeat or failed container; being replaced.
    #[serde(default)]
    pub unhealthy: i32,
    /// Being deleted.
    #[serde(default)]
    pub terminating: i32,

    /// One row per worker, at most 50 (the busiest first); `workers` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub worker_summaries: Vec<WorkerSummary>,

    /// Executions by outcome, summed over the pool's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<ExecutionTotals>,

    /// Executor counters, summed over the pool's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorTotals>,

    /// Promise bridge counters, summed over the pool's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeTotals>,

    /// Cancellation counters, summed over the pool's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancels: Option<CancelTotals>,

    /// Executions by mode, summed over the pool's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<ModeTotals>,

    /// Trace events the workers handed to their sidecars, summed over the pool's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceTotals>,

    /// Session checkpoints the workers wrote, restored, and failed to, summed over the pool's
    /// workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointTotals>,

    /// The Python versions the pool's workers run (from their first heartbeat), at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub python_versions: Vec<String>,

    /// The pool's own counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolCounters>,
}

/// Phase of one worker, as the operator classifies it.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum WorkerPhase {
    Starting,
    Warming,
    Idle,
    Bound,
    Unhealthy,
    Terminating,
}

impl WorkerPhase {
    pub const ALL: [WorkerPhase; 6] = [
        Self::Starting,
        Self::Warming,
        Self::Idle,
        Self::Bound,
        Self::Unhealthy,
        Self::Terminating,
    ];

    /// The spelling used in status and as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Warming => "Warming",
            Self::Idle => "Idle",
            Self::Bound => "Bound",
            Self::Unhealthy => "Unhealthy",
            Self::Terminating => "Terminating",
        }
    }
}

/// One worker in `status.workerSummaries`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSummary {
    /// Pod name.
    pub pod: String,
    /// Its phase (Starting, Warming, Idle, Bound, Unhealthy, Terminating).
    pub phase: WorkerPhase,
    /// The session holding it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When its last heartbeat arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Resident memory of worker and interpreter, bytes.
    #[serde(default)]
    pub rss_bytes: i64,
    /// CPU use in percent of one core, rounded to one decimal so status only changes meaningfully.
    #[serde(default)]
    pub cpu_percent: f64,
    /// Names defined in the interpreter's namespace.
    #[serde(default)]
    pub namespace_size: i64,
    /// Executions run since the worker started.
    #[serde(default)]
    pub executions: i64,
}

/// Executions by outcome.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionTotals {
    /// Executions that returned a result.
    pub ok: i64,
    /// Executions whose code raised (or that the worker failed, such as OutputQueueFull).
    pub error: i64,
    /// Executions cancelled through the API or by a client that went away.
    pub cancelled: i64,
    /// Executions stopped at their `timeoutMs`.
    pub timed_out: i64,
    /// Transactions (`transaction: rollbackOnError`) that failed and had their namespace put
    /// back; each is also counted under its outcome.
    #[serde(default)]
    pub rolled_back: i64,
}

/// Output pump counters.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorTotals {
    /// Output chunks the interpreters produced into the output queue.
    pub outputs_enqueued: i64,
    /// Output chunks delivered to clients.
    pub outputs_sent: i64,
    /// Output chunks dropped (backpressure DropNew / DropOldest, a drain timeout, a lost frame).
    pub outputs_dropped: i64,
    /// Largest queue depth any worker saw.
    pub max_queue_depth: i64,
    /// Executions that ended with OutputDrainTimeout because the client did not take the output.
    pub drain_timeouts: i64,
    /// Interpreters that died and were restarted (a reset is not counted).
    #[serde(default)]
    pub interpreter_restarts: i64,
}

/// Cancellation counters.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CancelTotals {
    /// Cancel requests received.
    pub requested: i64,
    /// Requests that ended a queued or running execution.
    pub effective: i64,
    /// Requests for an execution that was not queued or running.
    pub noop: i64,
    /// Executions ended by a KeyboardInterrupt raised in the code (cancel or timeout).
    pub interrupted: i64,
    /// Executions whose interpreter was killed because the interrupt had no effect in time.
    pub killed: i64,
}

/// Trace events between workers and their sidecars.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceTotals {
    /// Events handed to the sidecar's socket.
    pub sent: i64,
    /// Events dropped because the sidecar's socket was gone or its queue full.
    pub dropped: i64,
}

/// Session checkpoints of a pool's workers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointTotals {
    /// Checkpoints written to the store.
    pub created: i64,
    /// Checkpoints loaded into a fresh interpreter (asked for, or on a session's new worker).
    pub restored: i64,
    /// Create or restore calls that failed (too large, corrupt, store unwritable).
    pub failed: i64,
}

/// Executions by how the code ran.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModeTotals {
    /// Plain statements.
    pub plain: i64,
    /// Code with a top-level `await`, run on the interpreter's persistent event loop.
    pub top_level_await: i64,
    /// Code defining `async def` functions without a top-level `await`.
    pub async_def: i64,
    /// Executions whose async code contained a blocking call such as `time.sleep`.
    pub blocking_call_warnings: i64,
}

/// Promise bridge counters.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BridgeTotals {
    /// Promises pending right now.
    pub pending: i64,
    /// Most promises pending at once on any worker.
    pub high_water: i64,
    /// Promises and input requests created by code.
    pub created: i64,
    /// Settled with a value through the API.
    pub resolved: i64,
    /// Rejected through the API.
    pub rejected: i64,
    /// Not settled within their timeout.
    pub timeouts: i64,
    /// Cancelled with their execution (cancel, timeout, end of the code, shutdown).
    pub cancellations: i64,
}

/// The pool's own counters, kept across worker restarts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolCounters {
    /// Worker pods the operator created for the pool.
    pub workers_created: i64,
    /// Worker pods the operator deleted, for any reason.
    pub workers_removed: i64,
    /// Idle workers replaced because they passed a recycle rule (executions, memory, age).
    pub workers_recycled: i64,
    /// Worker processes that started again in a running pod.
    pub workers_restarted: i64,
    /// Sessions that got an idle worker at once.
    pub hits: i64,
    /// Sessions that had to wait for a new worker.
    pub misses: i64,
    /// hits / (hits + misses), as a percentage string such as "97.5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate_percent: Option<String>,
    pub acquisition: AcquisitionCounters,
    pub warmup: WarmupCounters,
    pub health: HealthCounters,
}

/// Acquisition of workers by sessions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AcquisitionCounters {
    /// Sessions that asked the pool for a worker.
    pub attempts: i64,
    /// Sessions that got one.
    pub successes: i64,
    /// Sessions that gave up waiting (`spec.sessions.acquireTimeoutSeconds`).
    pub timeouts: i64,
    /// Mean acquisition latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_avg_ms: Option<i64>,
    /// Median acquisition latency over the recent sessions, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<i64>,
    /// 99th percentile of the acquisition latency over the recent sessions, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<i64>,
}

/// Warm-up triggers: idle workers fell below the target.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WarmupCounters {
    /// Times the idle workers fell below `spec.replicas`.
    pub triggers: i64,
    /// Workers created while below the target.
    pub workers_created: i64,
}

/// Health checks of workers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCounters {
    /// Health passes over the pool's workers.
    pub runs: i64,
    /// Workers found unhealthy (each counted once).
    pub triggers: i64,
    /// Unhealthy workers removed (failed, stale, warm-up timed out or failed).
    pub removals: i64,
}
