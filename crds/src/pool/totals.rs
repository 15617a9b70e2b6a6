//! The workers' own counters (executions, output, bridge, cancels, modes, traces, checkpoints),
//! summed over a pool's workers for its status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
