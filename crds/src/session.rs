//! `CapsuleSession`: a claim on one warm worker of a pool.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A claim on one worker of a CapsulePool. While Bound, clients execute code on the worker at
/// `status.endpoint` with the token in the Secret `status.tokenSecret`. Deleting the session releases
/// the worker.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "capsule.dev",
    version = "v1alpha1",
    kind = "CapsuleSession",
    namespaced,
    shortname = "csess",
    category = "capsule",
    status = "CapsuleSessionStatus",
    derive = "PartialEq",
    doc = "A claim on one warm worker of a CapsulePool.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Bound, Released or Failed"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.pool",
        description = "The CapsulePool the worker comes from"
    ),
    printcolumn(
        name = "Worker",
        type_ = "string",
        json_path = ".status.worker",
        description = "The worker pod"
    ),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".status.gatewayUrl",
        description = "Where clients outside the cluster reach the session (the session gateway)",
        priority = 1
    ),
    printcolumn(
        name = "Warm",
        type_ = "boolean",
        json_path = ".status.warmHit",
        description = "Whether an idle worker was ready at once",
        priority = 1
    ),
    printcolumn(
        name = "Latency",
        type_ = "integer",
        json_path = ".status.acquisitionLatencyMs",
        description = "Milliseconds from creation to bound",
        priority = 1
    ),
    printcolumn(
        name = "Migrations",
        type_ = "integer",
        json_path = ".status.migrations",
        description = "Times the session moved to a new worker, its state restored from a checkpoint",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CapsuleSessionSpec {
    /// Name of the CapsulePool (same namespace) to take a worker from. Cannot change.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("pool is immutable: delete the session and create a new one"))]
    pub pool: String,

    /// Seconds after the session became Released or Failed before the operator deletes it. Unset:
    /// kept until deleted (its token Secret is deleted when it finishes either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2592000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Lifecycle of a session.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionPhase {
    /// Waiting for a worker.
    #[default]
    Pending,
    /// Holding a worker; executions go to `status.endpoint`.
    Bound,
    /// The worker was given back (idle timeout); the session can be deleted.
    Released,
    /// The session cannot be served; `status.message` says why.
    Failed,
}

impl SessionPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Bound => "Bound",
            Self::Released => "Released",
            Self::Failed => "Failed",
        }
    }
}

/// Where the session token is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name, in the session's namespace.
    pub name: String,
    /// The key holding the token.
    pub key: String,
}

/// A bound session's live view, from its worker's heartbeats.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// `idle` or `busy` (running an execution); `warming` while its worker's interpreter starts.
    pub state: String,
    /// Executions of this session that returned a result.
    pub executions_ok: i64,
    /// Executions of this session that raised, were cancelled or timed out.
    pub executions_failed: i64,
    /// Promises and input requests of this session waiting for an answer.
    pub pending_promises: i64,
    /// Names in the session's interpreter namespace.
    pub namespace_size: i64,
    /// Resident memory of the worker and its interpreters, in MiB.
    pub memory_mib: i64,
    /// CPU of the worker and its interpreters, whole percent of one core.
    pub cpu_percent: i64,
    /// When an execution last ran or finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    /// Checkpoints of this session the worker took (asked for or automatic).
    #[serde(default)]
    pub checkpoints: i64,
    /// The newest checkpoint the worker reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    /// When this view was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

/// A stored checkpoint, by its metadata only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    /// The checkpoint's id (`POST /v1/checkpoints/{id}/restore`).
    pub id: String,
    /// Stored (compressed, sealed) size in bytes.
    pub size_bytes: i64,
    /// When it was taken, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// The session's latest move to a new worker (`spec.sessions.persistence` of its pool).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionMigration {
    /// Why the session left its worker: WorkerGone, WorkerDeleting, WorkerFailed, WorkerSilent,
    /// WorkerRestarted or WorkerUnbound.
    pub reason: String,
    /// The same, for a person.
    pub message: String,
    /// The worker the session left.
    pub from_worker: String,
    /// When the move started.
    pub started_at: Time,
    /// The worker the session moved to, once bound there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_worker: Option<String>,
    /// The checkpoint restored on the new worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// When the new worker had restored the checkpoint; unset while the move is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<Time>,
}

/// What the operator observes of a session.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CapsuleSessionStatus {
    /// Pending (waiting for a worker), Bound (executions go to `endpoint`), Released (the worker
    /// was given back; the session can be deleted) or Failed (`message` says why).
    #[serde(default)]
    pub phase: SessionPhase,

    /// The session's `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Bound and, when not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The worker pod serving the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,

    /// Base URL of the worker's execute API (`POST <endpoint>/v1/executions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Base URL of the session through the session gateway (`POST <gatewayUrl>/executions`, same
    /// bearer token), set on binding when the operator runs with `--gateway-url`. Reachable from
    /// outside the cluster, unlike `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,

    /// The Secret holding the bearer token for the execute API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,

    /// Whether an idle worker was ready at once (a hit) or one had to be started (a miss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_hit: Option<bool>,

    /// Milliseconds from the session's creation to Bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition_latency_ms: Option<i64>,

    /// When the worker was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<Time>,

    /// When the session became Released or Failed; `spec.ttlSecondsAfterFinished` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// Why the session is Failed or Released, in a word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Why the session is Failed or Released, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The session's live view from its worker's heartbeats, refreshed at most once per status
    /// interval while something in it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<SessionInfo>,

    /// Times the session moved to a new worker after losing its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub migrations: i64,

    /// The latest move, while under way and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_migration: Option<SessionMigration>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
