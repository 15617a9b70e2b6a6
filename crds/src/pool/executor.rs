//! `spec.executor`: output queue, backpressure and timeouts of each worker's executor.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
