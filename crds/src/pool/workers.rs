//! One worker as status shows it: its phase and its row in `status.workerSummaries`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Resident memory of the `capsule-worker` process alone, bytes: what a warm worker costs
    /// beyond its interpreters.
    #[serde(default)]
    pub worker_rss_bytes: i64,
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
