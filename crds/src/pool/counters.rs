//! `status.pool`: the pool's own counters (workers created and removed, acquisitions, warm-ups,
//! health checks), kept across worker restarts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
