//! Every Prometheus series of the operator, registered once and handed out through the context.
//! Label sets are bounded: controller names, error kinds, phases and removal reasons are enums;
//! pool and namespace come from live pools and are removed when the pool goes.

use capsule_crds::WorkerPhase;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::error::ErrorKind;
use crate::pool::plan::RemovalReason;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub pool: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemovalLabels {
    pub namespace: String,
    pub pool: String,
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct DurationBuckets;

impl MetricConstructor<HistogramWithExemplars<TraceLabels>> for DurationBuckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceLabels> {
        // 1 ms … ~16 s
        HistogramWithExemplars::new(exponential_buckets(0.001, 2.0, 15))
    }
}

/// The operator's metrics.
pub struct Metrics {
    pub reconcile_runs: Family<ControllerLabels, Counter>,
    pub reconcile_failures: Family<FailureLabels, Counter>,
    pub reconcile_duration:
        Family<ControllerLabels, HistogramWithExemplars<TraceLabels>, DurationBuckets>,
    pub workers: Family<PhaseLabels, Gauge>,
    pub warm_target: Family<PoolLabels, Gauge>,
    pub max_workers: Family<PoolLabels, Gauge>,
    pub pool_ready: Family<PoolLabels, Gauge>,
    pub workers_created: Family<PoolLabels, Counter>,
    pub workers_removed: Family<RemovalLabels, Counter>,
    pub status_writes: Family<PoolLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconcile_runs: Family::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: Family::new_with_constructor(DurationBuckets),
            workers: Family::default(),
            warm_target: Family::default(),
            max_workers: Family::default(),
            pool_ready: Family::default(),
            workers_created: Family::default(),
            workers_removed: Family::default(),
            status_writes: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("capsule");
        r.register(
            "reconcile_runs",
            "Reconciles run, by controller",
            m.reconcile_runs.clone(),
        );
        r.register(
            "reconcile_failures",
            "Reconciles that failed, by controller and bounded error kind",
            m.reconcile_failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile, with the trace id as exemplar when tracing is on",
            m.reconcile_duration.clone(),
        );
        r.register(
            "pool_workers",
            "Workers of a pool by phase",
            m.workers.clone(),
        );
        r.register(
            "pool_warm_target",
            "Idle workers the pool keeps ready (spec.replicas)",
            m.warm_target.clone(),
        );
        r.register(
            "pool_max_workers",
            "Most workers the pool may run (spec.maxWorkers)",
            m.max_workers.clone(),
        );
        r.register(
            "pool_ready",
            "1 when the pool's Ready condition is True, else 0",
            m.pool_ready.clone(),
        );
        r.register(
            "pool_workers_created",
            "Worker pods created",
            m.workers_created.clone(),
        );
        r.register(
            "pool_workers_removed",
            "Worker pods deleted, by reason (failed, scale_down, outdated)",
            m.workers_removed.clone(),
        );
        r.register(
            "pool_status_writes",
            "Status writes to the API server",
            m.status_writes.clone(),
        );
        m
    }

    pub fn reconcile_failed(&self, controller: ControllerName, kind: ErrorKind) {
        self.reconcile_failures
            .get_or_create(&FailureLabels {
                controller,
                error_kind: kind.as_str(),
            })
            .inc();
    }

    pub fn removed(&self, pool: &PoolLabels, reason: RemovalReason) {
        self.workers_removed
            .get_or_create(&RemovalLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Publishes the worker counts of one pool.
    pub fn set_phases(&self, pool: &PoolLabels, counts: &[(WorkerPhase, i64)]) {
        for (phase, n) in counts {
            self.workers
                .get_or_create(&PhaseLabels {
                    namespace: pool.namespace.clone(),
                    pool: pool.pool.clone(),
                    phase: phase.as_str(),
                })
                .set(*n);
        }
    }

    /// Drops every series of a pool that no longer exists, so label sets stay bounded by live pools.
    pub fn forget_pool(&self, pool: &PoolLabels) {
        for phase in WorkerPhase::ALL {
            self.workers.remove(&PhaseLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                phase: phase.as_str(),
            });
        }
        for reason in [
            RemovalReason::Failed,
            RemovalReason::ScaleDown,
            RemovalReason::Outdated,
        ] {
            self.workers_removed.remove(&RemovalLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                reason: reason.as_str(),
            });
        }
        for family in [&self.warm_target, &self.max_workers, &self.pool_ready] {
            family.remove(pool);
        }
        for family in [&self.workers_created, &self.status_writes] {
            family.remove(pool);
        }
    }
}
