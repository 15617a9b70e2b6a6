//! Every Prometheus series of the operator, registered once and handed out through the context.
//! Label sets are bounded: controller names, error kinds, phases and removal reasons are enums;
//! pool and namespace come from live pools and are removed when the pool goes.

mod buckets;
mod labels;
mod raise;
mod table;

use std::sync::atomic::AtomicU64;

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
pub(crate) use raise::raise_each;
pub(crate) use raise::{raise_to, raise_to_f64};

type GaugeF64 = Gauge<f64, AtomicU64>;

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
    rss_bytes: Family<PoolLabels, Gauge>,
        "pool_rss_bytes", "Resident memory of the pool's workers and interpreters";
    cpu_cores: Family<PoolLabels, GaugeF64>,
        "pool_cpu_usage_cores", "CPU of the pool's workers and interpreters, in cores";
    cpu_seconds: Family<PoolLabels, Counter<f64, AtomicU64>>,
        "pool_cpu_seconds",
        "CPU time of the pool's workers and interpreters, across interpreter resets";
    namespace_names: Family<PoolLabels, Gauge>,
        "pool_namespace_names", "Names defined in the pool's interpreter namespaces";
    heartbeat_age: Family<PoolLabels, GaugeF64>,
        "pool_heartbeat_age_seconds", "Age of the oldest last heartbeat among the pool's workers";
    executions: Family<OutcomeLabels, Counter>,
        "pool_executions", "Executions by outcome (ok, error, cancelled, timed_out)";
    outputs: Family<OutputLabels, Counter>,
        "pool_outputs", "Output chunks by result (enqueued, sent, dropped)";
    output_queue_max_depth: Family<PoolLabels, Gauge>,
        "pool_output_queue_max_depth", "Deepest output queue any worker of the pool reported";
    drain_timeouts: Family<PoolLabels, Counter>,
        "pool_output_drain_timeouts", "Executions that ended with OutputDrainTimeout";
    promises_pending: Family<PoolLabels, Gauge>,
        "pool_promises_pending", "Bridge promises pending now";
    promises_high_water: Family<PoolLabels, Gauge>,
        "pool_promises_high_water", "Most bridge promises pending at once on one worker";
    promises: Family<PromiseLabels, Counter>,
        "pool_promises",
        "Bridge promises by event (created, resolved, rejected, timed_out, cancelled)";
    worker_restarts: Family<PoolLabels, Counter>,
        "pool_worker_restarts", "Worker processes that started again";
    interpreter_restarts: Family<PoolLabels, Counter>,
        "pool_interpreter_restarts",
        "Interpreters that died and were restarted by their worker (a reset is not counted)";
    cancels: Family<CancelLabels, Counter>,
        "pool_cancels",
        "Cancellations by kind (requested, effective, noop, interrupted, killed)";
    execution_modes: Family<ModeLabels, Counter>,
        "pool_execution_modes", "Executions by mode (plain, top_level_await, async_def)";
    checkpoints: Family<OutputLabels, Counter>,
        "pool_checkpoints",
        "Session checkpoints of the pool's workers, by result (created, restored, failed)";
    trace_events: Family<OutputLabels, Counter>,
        "pool_trace_events",
        "Trace events the workers handed to their sidecars, by result (sent, dropped)";
    blocking_call_warnings: Family<PoolLabels, Counter>,
        "pool_blocking_call_warnings",
        "Executions whose async code contained a blocking call such as time.sleep";
    transactions_rolled_back: Family<PoolLabels, Counter>,
        "pool_transactions_rolled_back",
        "Transactions (rollbackOnError) whose namespace was put back after an error";
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
    worker_rss_bytes: Family<WorkerLabels, Gauge>,
        "worker_rss_bytes",
        "Resident memory of one worker (only for pools with spec.metrics.perWorker)";
    worker_cpu_cores: Family<WorkerLabels, GaugeF64>,
        "worker_cpu_usage_cores",
        "CPU of one worker in cores (only for pools with spec.metrics.perWorker)";
    worker_heartbeat_age: Family<WorkerLabels, GaugeF64>,
        "worker_heartbeat_age_seconds",
        "Age of one worker's last heartbeat (only for pools with spec.metrics.perWorker)";
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
    fn pool_counters(&self) -> [&Family<PoolLabels, Counter>; 14] {
        [
            &self.workers_created,
            &self.status_writes,
            &self.drain_timeouts,
            &self.worker_restarts,
            &self.interpreter_restarts,
            &self.blocking_call_warnings,
            &self.transactions_rolled_back,
            &self.hits,
            &self.misses,
            &self.acquisition_timeouts,
            &self.session_migrations,
            &self.warmup_triggers,
            &self.health_checks,
            &self.health_triggers,
        ]
    }

    /// Drops the per-worker series of one worker.
    pub fn forget_worker(&self, worker: &WorkerLabels) {
        self.worker_rss_bytes.remove(worker);
        self.worker_cpu_cores.remove(worker);
        self.worker_heartbeat_age.remove(worker);
    }

    /// Drops every series of a pool that no longer exists, so label sets stay bounded by live pools.
    pub fn forget_pool(&self, pool: &PoolLabels) {
        for family in [
            &self.warm_target,
            &self.max_workers,
            &self.pool_ready,
            &self.rss_bytes,
            &self.namespace_names,
            &self.output_queue_max_depth,
            &self.promises_pending,
            &self.promises_high_water,
        ] {
            family.remove(pool);
        }
        for family in [&self.cpu_cores, &self.heartbeat_age] {
            family.remove(pool);
        }
        for family in self.pool_counters() {
            family.remove(pool);
        }
        self.acquisition.remove(pool);
        self.cpu_seconds.remove(pool);
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
        forget_each(&self.executions, pool, EXECUTION_OUTCOMES);
        forget_each(&self.outputs, pool, OUTPUT_RESULTS);
        forget_each(&self.promises, pool, PROMISE_EVENTS);
        forget_each(&self.trace_events, pool, TRACE_RESULTS);
        forget_each(&self.checkpoints, pool, CHECKPOINT_RESULTS);
        forget_each(&self.cancels, pool, CANCEL_KINDS);
        forget_each(&self.execution_modes, pool, EXECUTION_MODES);
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
