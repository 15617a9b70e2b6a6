//! The label sets of the operator's series; those of a pool and one bounded value are built by
//! [`PoolValueLabels::of`], for publishing and for forgetting a pool's series alike.

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
}
