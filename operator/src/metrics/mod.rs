//! Every Prometheus series of the operator, registered once and handed out through the context.
//! Label sets are bounded: controller names, error kinds, phases and removal reasons are enums;
//! pool and namespace come from live pools and are removed when the pool goes.

mod buckets;
mod labels;
mod table;

use capsule_crds::WorkerPhase;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ErrorKind;
use crate::pool::plan::RemovalReason;

pub use buckets::{AcquisitionBuckets, DurationBuckets};
pub use labels::*;
table::metrics! {
    reconcile_runs: Family<ControllerLabels, Counter>,
        "reconcile_runs", "Reconciles run, by controller";
    reconcile_failures: Family<FailureLabels, Counter>,
        "reconcile_failures", "Reconciles that failed, by controller and bounded error kind";
    reconcile_duration:
        Family<ControllerLabels, HistogramWithExemplars<TraceLabels>, DurationBuckets>
        = Family::new_with_constructor(DurationBuckets),
        "reconcile_duration_seconds",
        "Duration of one reconcile, with the trace id as exemplar when tracing is on";
    workers: Family<PhaseLabels, Gauge>,
        "pool_workers", "Workers of a pool by phase";
    warm_target: Family<PoolLabels, Gauge>,
        "pool_warm_target", "Idle workers the pool keeps ready (spec.replicas)";
    max_workers: Family<PoolLabels, Gauge>,
        "pool_max_workers", "Most workers the pool may run (spec.maxWorkers)";
    pool_ready: Family<PoolLabels, Gauge>,
        "pool_ready", "1 when the pool's Ready condition is True, else 0";
    workers_created: Family<PoolLabels, Counter>,
        "pool_workers_created", "Worker pods created";
    workers_removed: Family<RemovalLabels, Counter>,
        "pool_workers_removed",
        "Worker pods deleted, by reason (failed, scale_down, outdated, stale, recycled, released)";
    status_writes: Family<PoolLabels, Counter>,
        "pool_status_writes", "Status writes to the API server";
    hits: Family<PoolLabels, Counter>,
        "pool_hits", "Sessions that got an idle worker at once";
    misses: Family<PoolLabels, Counter>,
        "pool_misses", "Sessions that had to wait for a new worker";
    acquisition: Family<PoolLabels, Histogram, AcquisitionBuckets>
        = Family::new_with_constructor(AcquisitionBuckets),
        "pool_acquisition_seconds", "Time from a session's creation to its worker being bound";
    acquisition_timeouts: Family<PoolLabels, Counter>,
        "pool_acquisition_timeouts", "Sessions that failed waiting for a worker";
    session_migrations: Family<PoolLabels, Counter>,
        "pool_session_migrations",
        "Sessions moved to a new worker, their latest checkpoint restored there";
    warmup_triggers: Family<PoolLabels, Counter>,
        "pool_warmup_triggers", "Times idle workers fell below the warm target";
    health_checks: Family<PoolLabels, Counter>,
        "pool_health_checks", "Health passes over the pool's workers";
    health_triggers: Family<PoolLabels, Counter>,
        "pool_health_triggers", "Workers found unhealthy (each counted once)";
}

impl Metrics {
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
            .get_or_create(&RemovalLabels::of(pool, reason.as_str()))
            .inc();
    }

    /// Publishes the worker counts of one pool.
    pub fn set_phases(&self, pool: &PoolLabels, counts: &[(WorkerPhase, i64)]) {
        // Each counter exists from 0 as soon as its pool does: increase() and rate() cannot see
        // the first event of a series that appears with it (the first miss would not alert).
        for family in self.pool_counters() {
            drop(family.get_or_create(pool));
        }
        for (phase, n) in counts {
            self.workers
                .get_or_create(&PhaseLabels::of(pool, phase.as_str()))
                .set(*n);
        }
    }

    /// The counters labelled by pool alone.
    fn pool_counters(&self) -> [&Family<PoolLabels, Counter>; 9] {
        [
            &self.workers_created,
            &self.status_writes,
            &self.hits,
            &self.misses,
            &self.acquisition_timeouts,
            &self.session_migrations,
            &self.warmup_triggers,
            &self.health_checks,
            &self.health_triggers,
        ]
    }

    /// Drops every series of a pool that no longer exists, so label sets stay bounded by live pools
    /// (the relay's series go with the pool's entry in the index).
    pub fn forget_pool(&self, pool: &PoolLabels) {
        for family in [&self.warm_target, &self.max_workers, &self.pool_ready] {
            family.remove(pool);
        }
        for family in self.pool_counters() {
            family.remove(pool);
        }
        self.acquisition.remove(pool);
        forget_each(
            &self.workers,
            pool,
            WorkerPhase::ALL.map(WorkerPhase::as_str),
        );
        forget_each(
            &self.workers_removed,
            pool,
            RemovalReason::ALL.map(RemovalReason::as_str),
        );
    }
}

/// Drops the pool's series of `family`, one per value of its value label.
fn forget_each<L: PoolValueLabels, M, C: MetricConstructor<M>, const N: usize>(
    family: &Family<L, M, C>,
    pool: &PoolLabels,
    values: [&'static str; N],
) {
    for value in values {
        family.remove(&L::of(pool, value));
    }
}
