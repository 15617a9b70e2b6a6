//! `status`: what the operator observes of a pool, from conditions and phase counts to the
//! relayed totals.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BridgeTotals, CancelTotals, CheckpointTotals, ExecutionTotals, ExecutorTotals, ModeTotals,
    PoolCounters, TraceTotals, WorkerSummary,
};

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
