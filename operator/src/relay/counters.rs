//! The monotonic counters a worker reports in its heartbeats, declared once: the struct and its
//! field-by-field operations follow one list.

use capsule_protocol::heartbeat::Heartbeat;

/// Declares [`Counters`] once: the struct and its field-by-field operations follow the list.
macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// Monotonic counters of one worker, summed the same way for a pool.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $(pub $field: u64,)*
        }

        impl Counters {
            pub(super) fn any_below(&self, earlier: &Counters) -> bool {
                false $(|| self.$field < earlier.$field)*
            }

            pub fn add(&mut self, other: &Counters) {
                $(self.$field += other.$field;)*
            }

            /// `f` applied field by field.
            pub fn zip(&self, other: &Counters, f: impl Fn(u64, u64) -> u64) -> Counters {
                Counters {
                    $($field: f(self.$field, other.$field),)*
                }
            }
        }
    };
}

counters!(
    exec_ok,
    exec_error,
    exec_cancelled,
    exec_timed_out,
    outputs_enqueued,
    outputs_sent,
    outputs_dropped,
    drain_timeouts,
    promises_created,
    promises_resolved,
    promises_rejected,
    promises_timed_out,
    promises_cancelled,
    interpreter_restarts,
    cancels_requested,
    cancels_effective,
    cancels_noop,
    cancels_interrupted,
    cancels_killed,
    mode_plain,
    mode_top_level_await,
    mode_async_def,
    blocking_call_warnings,
    transactions_rolled_back,
    trace_sent,
    trace_dropped,
    checkpoints_created,
    checkpoints_restored,
    checkpoint_failures,
    cpu_millis,
);

impl Counters {
    pub(super) fn from_heartbeat(hb: &Heartbeat) -> Self {
        Self {
            exec_ok: hb.executions.ok,
            exec_error: hb.executions.error,
            exec_cancelled: hb.executions.cancelled,
            exec_timed_out: hb.executions.timed_out,
            outputs_enqueued: hb.executor.outputs_enqueued,
            outputs_sent: hb.executor.outputs_sent,
            outputs_dropped: hb.executor.outputs_dropped,
            drain_timeouts: hb.executor.drain_timeouts,
            promises_created: hb.bridge.created,
            promises_resolved: hb.bridge.resolved,
            promises_rejected: hb.bridge.rejected,
            promises_timed_out: hb.bridge.timed_out,
            promises_cancelled: hb.bridge.cancelled,
            interpreter_restarts: hb.interpreter_restarts,
            cancels_requested: hb.cancels.requested,
            cancels_effective: hb.cancels.effective,
            cancels_noop: hb.cancels.noop,
            cancels_interrupted: hb.cancels.interrupted,
            cancels_killed: hb.cancels.killed,
            mode_plain: hb.modes.plain,
            mode_top_level_await: hb.modes.top_level_await,
            mode_async_def: hb.modes.async_def,
            blocking_call_warnings: hb.blocking_call_warnings,
            transactions_rolled_back: hb.transactions_rolled_back,
            trace_sent: hb.trace.sent,
            trace_dropped: hb.trace.dropped,
            checkpoints_created: hb.checkpoints_created,
            checkpoints_restored: hb.checkpoints_restored,
            checkpoint_failures: hb.checkpoint_failures,
            cpu_millis: hb.cpu_millis,
        }
    }

    pub fn executions(&self) -> u64 {
        self.exec_ok + self.exec_error + self.exec_cancelled + self.exec_timed_out
    }
}
