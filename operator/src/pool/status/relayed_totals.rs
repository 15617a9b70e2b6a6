//! The status sections that mirror the relay's totals of the pool's workers (executions, executor,
//! bridge, cancels, modes, traces, checkpoints), both ways: written from the totals, and read back
//! after an operator restart. One list keeps the two directions the same.

use capsule_crds::{
    BridgeTotals, CancelTotals, CapsulePoolStatus, CheckpointTotals, ExecutionTotals,
    ExecutorTotals, ModeTotals, TraceTotals,
};

use crate::relay::index::PoolTotals;

/// Declares both directions from one list: each status section, its type, and each of its fields
/// with the figure of [`PoolTotals`] it holds.
macro_rules! relayed_sections {
    ($($section:ident: $ty:ident { $($field:ident: $($figure:ident).+,)* })*) => {
        /// A status with only the relayed sections set, for the rest of the status to be built
        /// around.
        pub(super) fn relayed_totals(totals: &PoolTotals) -> CapsulePoolStatus {
            CapsulePoolStatus {
                $($section: Some($ty {
                    $($field: totals.$($figure).+ as i64,)*
                }),)*
                ..Default::default()
            }
        }

        /// The totals of a pool's last written status (negative figures read as 0).
        pub(in crate::pool) fn totals_from_status(status: Option<&CapsulePoolStatus>) -> PoolTotals {
            let mut totals = PoolTotals::default();
            let Some(status) = status else {
                return totals;
            };
            $(if let Some(section) = &status.$section {
                $(totals.$($figure).+ = section.$field.max(0) as u64;)*
            })*
            totals
        }
    };
}

relayed_sections! {
    executions: ExecutionTotals {
        ok: counters.exec_ok,
        error: counters.exec_error,
        cancelled: counters.exec_cancelled,
        timed_out: counters.exec_timed_out,
        rolled_back: counters.transactions_rolled_back,
    }
    executor: ExecutorTotals {
        outputs_enqueued: counters.outputs_enqueued,
        outputs_sent: counters.outputs_sent,
        outputs_dropped: counters.outputs_dropped,
        max_queue_depth: max_queue_depth,
        drain_timeouts: counters.drain_timeouts,
        interpreter_restarts: counters.interpreter_restarts,
    }
    bridge: BridgeTotals {
        pending: pending_promises,
        high_water: promise_high_water,
        created: counters.promises_created,
        resolved: counters.promises_resolved,
        rejected: counters.promises_rejected,
        timeouts: counters.promises_timed_out,
        cancellations: counters.promises_cancelled,
    }
    cancels: CancelTotals {
        requested: counters.cancels_requested,
        effective: counters.cancels_effective,
        noop: counters.cancels_noop,
        interrupted: counters.cancels_interrupted,
        killed: counters.cancels_killed,
    }
    modes: ModeTotals {
        plain: counters.mode_plain,
        top_level_await: counters.mode_top_level_await,
        async_def: counters.mode_async_def,
        blocking_call_warnings: counters.blocking_call_warnings,
    }
    trace: TraceTotals {
        sent: counters.trace_sent,
        dropped: counters.trace_dropped,
    }
    checkpoints: CheckpointTotals {
        created: counters.checkpoints_created,
        restored: counters.checkpoints_restored,
        failed: counters.checkpoint_failures,
    }
}
