//! Where each counter of the worker's `GET /v1/stats` shows on the operator's side.

/// Each counter of `GET /v1/stats` → (its field under the pool's `status`, its metric family).
pub const HOMES: &[(&str, &str, &str)] = &[
    ("executions.ok", "executions.ok", "capsule_pool_executions"),
    (
        "executions.error",
        "executions.error",
        "capsule_pool_executions",
    ),
    (
        "executions.cancelled",
        "executions.cancelled",
        "capsule_pool_executions",
    ),
    (
        "executions.timedOut",
        "executions.timedOut",
        "capsule_pool_executions",
    ),
    ("modes.plain", "modes.plain", "capsule_pool_execution_modes"),
    (
        "modes.topLevelAwait",
        "modes.topLevelAwait",
        "capsule_pool_execution_modes",
    ),
    (
        "modes.asyncDef",
        "modes.asyncDef",
        "capsule_pool_execution_modes",
    ),
    (
        "blockingCallWarnings",
        "modes.blockingCallWarnings",
        "capsule_pool_blocking_call_warnings",
    ),
    (
        "transactionsRolledBack",
        "executions.rolledBack",
        "capsule_pool_transactions_rolled_back",
    ),
    (
        "executor.outputsEnqueued",
        "executor.outputsEnqueued",
        "capsule_pool_outputs",
    ),
    (
        "executor.outputsSent",
        "executor.outputsSent",
        "capsule_pool_outputs",
    ),
    (
        "executor.outputsDropped",
        "executor.outputsDropped",
        "capsule_pool_outputs",
    ),
    (
        "executor.maxQueueDepth",
        "executor.maxQueueDepth",
        "capsule_pool_output_queue_max_depth",
    ),
    (
        "executor.drainTimeouts",
        "executor.drainTimeouts",
        "capsule_pool_output_drain_timeouts",
    ),
    (
        "interpreterRestarts",
        "executor.interpreterRestarts",
        "capsule_pool_interpreter_restarts",
    ),
    (
        "bridge.pending",
        "bridge.pending",
        "capsule_pool_promises_pending",
    ),
    (
        "bridge.highWater",
        "bridge.highWater",
        "capsule_pool_promises_high_water",
    ),
    ("bridge.created", "bridge.created", "capsule_pool_promises"),
    (
        "bridge.resolved",
        "bridge.resolved",
        "capsule_pool_promises",
    ),
    (
        "bridge.rejected",
        "bridge.rejected",
        "capsule_pool_promises",
    ),
    (
        "bridge.timedOut",
        "bridge.timeouts",
        "capsule_pool_promises",
    ),
    (
        "bridge.cancelled",
        "bridge.cancellations",
        "capsule_pool_promises",
    ),
    (
        "cancels.requested",
        "cancels.requested",
        "capsule_pool_cancels",
    ),
    (
        "cancels.effective",
        "cancels.effective",
        "capsule_pool_cancels",
    ),
    ("cancels.noop", "cancels.noop", "capsule_pool_cancels"),
    (
        "cancels.interrupted",
        "cancels.interrupted",
        "capsule_pool_cancels",
    ),
    ("cancels.killed", "cancels.killed", "capsule_pool_cancels"),
    ("trace.sent", "trace.sent", "capsule_pool_trace_events"),
    (
        "trace.dropped",
        "trace.dropped",
        "capsule_pool_trace_events",
    ),
    (
        "checkpointsCreated",
        "checkpoints.created",
        "capsule_pool_checkpoints",
    ),
    (
        "checkpointsRestored",
        "checkpoints.restored",
        "capsule_pool_checkpoints",
    ),
    (
        "checkpointFailures",
        "checkpoints.failed",
        "capsule_pool_checkpoints",
    ),
    (
        "namespaceSize",
        "workerSummaries.namespaceSize",
        "capsule_pool_namespace_names",
    ),
];

/// Leaves of `GET /v1/stats` that are not counters, and where they show instead.
#[allow(dead_code)]
pub const NOT_COUNTERS: &[(&str, &str)] = &[
    (
        "state",
        "status.workerSummaries[].phase and the phase counts",
    ),
    ("session", "status.workerSummaries[].session"),
    ("draining", "the worker's readiness"),
    ("pendingPromises", "the sidecar's Promises view"),
];
