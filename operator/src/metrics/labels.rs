//! The label sets of the operator's series, and the bounded values their one non-pool label takes:
//! the one list each set's values come from, for publishing and for forgetting a pool's series.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ControllerName {
    pool,
    session,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: ControllerName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: ControllerName,
    pub error_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Default)]
pub struct TraceLabels {
    pub trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub pool: String,
}

impl PoolLabels {
    /// The labels of one of the pool's workers.
    pub(crate) fn worker(&self, pod: String) -> WorkerLabels {
        WorkerLabels {
            namespace: self.namespace.clone(),
            pool: self.pool.clone(),
            pod,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub namespace: String,
    pub pool: String,
    pub pod: String,
}

/// A pool's labels and one bounded value (a phase, an outcome, a result...).
pub(crate) trait PoolValueLabels: Clone + std::hash::Hash + Eq {
    fn of(pool: &PoolLabels, value: &'static str) -> Self;
}

/// Declares label sets of a pool and one bounded value, each named by its value's label.
macro_rules! pool_value_labels {
    ($($name:ident { $label:ident })*) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name {
            pub namespace: String,
            pub pool: String,
            pub $label: &'static str,
        }

        impl PoolValueLabels for $name {
            fn of(pool: &PoolLabels, value: &'static str) -> Self {
                Self {
                    namespace: pool.namespace.clone(),
                    pool: pool.pool.clone(),
                    $label: value,
                }
            }
        }
    )*};
}

pool_value_labels! {
    PhaseLabels { phase }
    RemovalLabels { reason }
    OutcomeLabels { outcome }
    OutputLabels { result }
    PromiseLabels { event }
    CancelLabels { kind }
    ModeLabels { mode }
}

/// The `outcome` values of `capsule_pool_executions_total`.
pub(crate) const EXECUTION_OUTCOMES: [&str; 4] = ["ok", "error", "cancelled", "timed_out"];
/// The `result` values of `capsule_pool_outputs_total`.
pub(crate) const OUTPUT_RESULTS: [&str; 3] = ["enqueued", "sent", "dropped"];
/// The `event` values of `capsule_pool_promises_total`.
pub(crate) const PROMISE_EVENTS: [&str; 5] =
    ["created", "resolved", "rejected", "timed_out", "cancelled"];
/// The `kind` values of `capsule_pool_cancels_total`.
pub(crate) const CANCEL_KINDS: [&str; 5] =
    ["requested", "effective", "noop", "interrupted", "killed"];
/// The `result` values of `capsule_pool_trace_events_total`.
pub(crate) const TRACE_RESULTS: [&str; 2] = ["sent", "dropped"];
/// The `result` label values of `capsule_pool_checkpoints_total`.
pub(crate) const CHECKPOINT_RESULTS: [&str; 3] = ["created", "restored", "failed"];
/// The `mode` values of `capsule_pool_execution_modes_total`.
pub(crate) const EXECUTION_MODES: [&str; 3] = ["plain", "top_level_await", "async_def"];
