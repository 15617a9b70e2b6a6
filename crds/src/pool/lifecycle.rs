//! A worker's life in the pool: warm-up before it is idle, heartbeats while it lives, the session
//! policy while bound, and the recycle rules that retire it.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checkpoints::PersistenceSpec;

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
