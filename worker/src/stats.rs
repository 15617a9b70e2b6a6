//! Process-wide counters, monotonic since start, read into heartbeats and `GET /v1/stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use capsule_protocol::execute::ExecutionMode;
use capsule_protocol::heartbeat::{CancelCounters, ExecutionCounts, ExecutorCounters, ModeCounts};

/// How an execution ended, for the outcome counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Cancelled,
    TimedOut,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub ok: AtomicU64,
    pub error: AtomicU64,
    pub cancelled: AtomicU64,
    pub timed_out: AtomicU64,
    pub mode_plain: AtomicU64,
    pub mode_top_level_await: AtomicU64,
    pub mode_async_def: AtomicU64,
    pub blocking_call_warnings: AtomicU64,
    pub transactions_rolled_back: AtomicU64,
    pub outputs_enqueued: AtomicU64,
    pub outputs_sent: AtomicU64,
    pub outputs_dropped: AtomicU64,
    pub max_queue_depth: AtomicU64,
    pub drain_timeouts: AtomicU64,
    pub cancels_requested: AtomicU64,
    pub cancels_effective: AtomicU64,
    pub cancels_noop: AtomicU64,
    pub interrupted: AtomicU64,
    pub killed: AtomicU64,
    pub interpreter_restarts: AtomicU64,
    pub namespace_size: AtomicU64,
    pub checkpoints_created: AtomicU64,
    pub checkpoints_restored: AtomicU64,
    pub checkpoint_failures: AtomicU64,
}

impl Stats {
    pub fn record_outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Error => &self.error,
            Outcome::Cancelled => &self.cancelled,
            Outcome::TimedOut => &self.timed_out,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn record_mode(&self, mode: ExecutionMode) {
        match mode {
            ExecutionMode::Plain => &self.mode_plain,
            ExecutionMode::TopLevelAwait => &self.mode_top_level_await,
            ExecutionMode::AsyncDef => &self.mode_async_def,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn record_queue_depth(&self, depth: usize) {
        self.max_queue_depth.fetch_max(depth as u64, Relaxed);
    }

    pub fn executions(&self) -> ExecutionCounts {
        ExecutionCounts {
            ok: self.ok.load(Relaxed),
            error: self.error.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
        }
    }

    pub fn modes(&self) -> ModeCounts {
        ModeCounts {
            plain: self.mode_plain.load(Relaxed),
            top_level_await: self.mode_top_level_await.load(Relaxed),
            async_def: self.mode_async_def.load(Relaxed),
        }
    }

    pub fn executor(&self) -> ExecutorCounters {
        ExecutorCounters {
            outputs_enqueued: self.outputs_enqueued.load(Relaxed),
            outputs_sent: self.outputs_sent.load(Relaxed),
            outputs_dropped: self.outputs_dropped.load(Relaxed),
            max_queue_depth: self.max_queue_depth.load(Relaxed),
            drain_timeouts: self.drain_timeouts.load(Relaxed),
        }
    }

    pub fn cancels(&self) -> CancelCounters {
        CancelCounters {
            requested: self.cancels_requested.load(Relaxed),
            effective: self.cancels_effective.load(Relaxed),
            noop: self.cancels_noop.load(Relaxed),
            interrupted: self.interrupted.load(Relaxed),
            killed: self.killed.load(Relaxed),
        }
    }
}
