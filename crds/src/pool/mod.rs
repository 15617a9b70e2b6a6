//! `CapsulePool`: a pool of pre-warmed Python workers and everything the operator reports about it.
//! This file holds the top-level spec and its bounds; each section of spec and status has its own file.

mod counters;
mod diagnostics;
mod executor;
mod lifecycle;
mod network_policy;
mod status;
mod template;
mod totals;
mod workers;

pub use counters::*;
pub use diagnostics::*;
pub use executor::*;
pub use lifecycle::*;
pub use network_policy::*;
pub use status::*;
pub use template::*;
pub use totals::*;
pub use workers::*;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::checkpoints::CheckpointSpec;

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

fn default_true() -> bool {
    true
}
