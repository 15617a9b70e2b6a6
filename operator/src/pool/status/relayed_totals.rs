//! The status sections copied from the relay's totals of the pool's workers (executions, executor,
//! bridge, cancels, modes, traces, checkpoints).

use capsule_crds::{
    BridgeTotals, CancelTotals, CapsulePoolStatus, CheckpointTotals, ExecutionTotals,
    ExecutorTotals, ModeTotals, TraceTotals,
};

use crate::relay::index::PoolTotals;

/// A status with only the relayed sections set, for the rest of the status to be built around.
pub(super) fn relayed_totals(totals: &PoolTotals) -> CapsulePoolStatus {
    let c = &totals.counters;
    CapsulePoolStatus {
        executions: Some(ExecutionTotals {
            ok: c.exec_ok as i64,
            error: c.exec_error as i64,
            cancelled: c.exec_cancelled as i64,
            timed_out: c.exec_timed_out as i64,
            rolled_back: c.transactions_rolled_back as i64,
        }),
        executor: Some(ExecutorTotals {
            outputs_enqueued: c.outputs_enqueued as i64,
            outputs_sent: c.outputs_sent as i64,
            outputs_dropped: c.outputs_dropped as i64,
            max_queue_depth: totals.max_queue_depth as i64,
            drain_timeouts: c.drain_timeouts as i64,
            interpreter_restarts: c.interpreter_restarts as i64,
        }),
        bridge: Some(BridgeTotals {
            pending: totals.pending_promises as i64,
            high_water: totals.promise_high_water as i64,
            created: c.promises_created as i64,
            resolved: c.promises_resolved as i64,
            rejected: c.promises_rejected as i64,
            timeouts: c.promises_timed_out as i64,
            cancellations: c.promises_cancelled as i64,
        }),
        cancels: Some(CancelTotals {
            requested: c.cancels_requested as i64,
            effective: c.cancels_effective as i64,
            noop: c.cancels_noop as i64,
            interrupted: c.cancels_interrupted as i64,
            killed: c.cancels_killed as i64,
        }),
        modes: Some(ModeTotals {
            plain: c.mode_plain as i64,
            top_level_await: c.mode_top_level_await as i64,
            async_def: c.mode_async_def as i64,
            blocking_call_warnings: c.blocking_call_warnings as i64,
        }),
        trace: Some(TraceTotals {
            sent: c.trace_sent as i64,
            dropped: c.trace_dropped as i64,
        }),
        checkpoints: Some(CheckpointTotals {
            created: c.checkpoints_created as i64,
            restored: c.checkpoints_restored as i64,
            failed: c.checkpoint_failures as i64,
        }),
        ..Default::default()
    }
}
