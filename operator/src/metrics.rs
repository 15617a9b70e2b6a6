//! Every Prometheus series of the operator, registered once and handed out through the context.
//! Label sets are bounded: controller names, error kinds, phases and removal reasons are enums;
//! pool and namespace come from live pools and are removed when the pool goes.

use capsule_crds::WorkerPhase;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub namespace: String,
    pub pool: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    pub namespace: String,
    pub pool: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromiseLabels {
    pub namespace: String,
    pub pool: String,
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CancelLabels {
    pub namespace: String,
    pub pool: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub namespace: String,
    pub pool: String,
    pub mode: &'static str,
}

/// The `kind` values of `capsule_pool_cancels_total`.
pub const CANCEL_KINDS: [&str; 5] = ["requested", "effective", "noop", "interrupted", "killed"];
/// The `result` values of `capsule_pool_trace_events_total`.
pub const TRACE_RESULTS: [&str; 2] = ["sent", "dropped"];
/// The `result` label values of `capsule_pool_checkpoints_total`.
pub const CHECKPOINT_RESULTS: [&str; 3] = ["created", "restored", "failed"];
/// The `mode` values of `capsule_pool_execution_modes_total`.
pub const EXECUTION_MODES: [&str; 3] = ["plain", "top_level_await", "async_def"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub namespace: String,
    pub pool: String,
    pub pod: String,
}

#[derive(Clone)]
pub struct AcquisitionBuckets;

impl MetricConstructor<Histogram> for AcquisitionBuckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms … ~65 s
        Histogram::new(exponential_buckets(0.001, 2.0, 17))
    }
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
    pub rss_bytes: Family<PoolLabels, Gauge>,
    pub cpu_cores: Family<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cpu_seconds: Family<PoolLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub namespace_names: Family<PoolLabels, Gauge>,
    pub heartbeat_age: Family<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub executions: Family<OutcomeLabels, Counter>,
    pub outputs: Family<OutputLabels, Counter>,
    pub output_queue_max_depth: Family<PoolLabels, Gauge>,
    pub drain_timeouts: Family<PoolLabels, Counter>,
    pub promises_pending: Family<PoolLabels, Gauge>,
    pub promises_high_water: Family<PoolLabels, Gauge>,
    pub promises: Family<PromiseLabels, Counter>,
    pub worker_restarts: Family<PoolLabels, Counter>,
    pub interpreter_restarts: Family<PoolLabels, Counter>,
    pub cancels: Family<CancelLabels, Counter>,
    pub execution_modes: Family<ModeLabels, Counter>,
    pub blocking_call_warnings: Family<PoolLabels, Counter>,
    pub transactions_rolled_back: Family<PoolLabels, Counter>,
    pub trace_events: Family<OutputLabels, Counter>,
    pub checkpoints: Family<OutputLabels, Counter>,
    pub hits: Family<PoolLabels, Counter>,
    pub misses: Family<PoolLabels, Counter>,
    pub acquisition: Family<PoolLabels, Histogram, AcquisitionBuckets>,
    pub acquisition_timeouts: Family<PoolLabels, Counter>,
    pub session_migrations: Family<PoolLabels, Counter>,
    pub warmup_triggers: Family<PoolLabels, Counter>,
    pub health_checks: Family<PoolLabels, Counter>,
    pub health_triggers: Family<PoolLabels, Counter>,
    pub worker_rss_bytes: Family<WorkerLabels, Gauge>,
    pub worker_cpu_cores: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub worker_heartbeat_age: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// Raises a counter to an absolute total kept elsewhere (the relay's index); never lowers it.
pub fn raise_to(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// [`raise_to`] for a counter of seconds.
pub fn raise_to_f64(counter: &Counter<f64, std::sync::atomic::AtomicU64>, total: f64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
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
            rss_bytes: Family::default(),
            cpu_cores: Family::default(),
            cpu_seconds: Family::default(),
            namespace_names: Family::default(),
            heartbeat_age: Family::default(),
            executions: Family::default(),
            outputs: Family::default(),
            output_queue_max_depth: Family::default(),
            drain_timeouts: Family::default(),
            promises_pending: Family::default(),
            promises_high_water: Family::default(),
            promises: Family::default(),
            worker_restarts: Family::default(),
            interpreter_restarts: Family::default(),
            cancels: Family::default(),
            execution_modes: Family::default(),
            blocking_call_warnings: Family::default(),
            transactions_rolled_back: Family::default(),
            trace_events: Family::default(),
            checkpoints: Family::default(),
            hits: Family::default(),
            misses: Family::default(),
            acquisition: Family::new_with_constructor(AcquisitionBuckets),
            acquisition_timeouts: Family::default(),
            session_migrations: Family::default(),
            warmup_triggers: Family::default(),
            health_checks: Family::default(),
            health_triggers: Family::default(),
            worker_rss_bytes: Family::default(),
            worker_cpu_cores: Family::default(),
            worker_heartbeat_age: Family::default(),
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
            "Worker pods deleted, by reason (failed, scale_down, outdated, stale, recycled, released)",
            m.workers_removed.clone(),
        );
        r.register(
            "pool_status_writes",
            "Status writes to the API server",
            m.status_writes.clone(),
        );
        r.register(
            "pool_rss_bytes",
            "Resident memory of the pool's workers and interpreters",
            m.rss_bytes.clone(),
        );
        r.register(
            "pool_cpu_usage_cores",
            "CPU of the pool's workers and interpreters, in cores",
            m.cpu_cores.clone(),
        );
        r.register(
            "pool_cpu_seconds",
            "CPU time of the pool's workers and interpreters, across interpreter resets",
            m.cpu_seconds.clone(),
        );
        r.register(
            "pool_namespace_names",
            "Names defined in the pool's interpreter namespaces",
            m.namespace_names.clone(),
        );
        r.register(
            "pool_heartbeat_age_seconds",
            "Age of the oldest last heartbeat among the pool's workers",
            m.heartbeat_age.clone(),
        );
        r.register(
            "pool_executions",
            "Executions by outcome (ok, error, cancelled, timed_out)",
            m.executions.clone(),
        );
        r.register(
            "pool_outputs",
            "Output chunks by result (enqueued, sent, dropped)",
            m.outputs.clone(),
        );
        r.register(
            "pool_output_queue_max_depth",
            "Deepest output queue any worker of the pool reported",
            m.output_queue_max_depth.clone(),
        );
        r.register(
            "pool_output_drain_timeouts",
            "Executions that ended with OutputDrainTimeout",
            m.drain_timeouts.clone(),
        );
        r.register(
            "pool_promises_pending",
            "Bridge promises pending now",
            m.promises_pending.clone(),
        );
        r.register(
            "pool_promises_high_water",
            "Most bridge promises pending at once on one worker",
            m.promises_high_water.clone(),
        );
        r.register(
            "pool_promises",
            "Bridge promises by event (created, resolved, rejected, timed_out, cancelled)",
            m.promises.clone(),
        );
        r.register(
            "pool_worker_restarts",
            "Worker processes that started again",
            m.worker_restarts.clone(),
        );
        r.register(
            "pool_interpreter_restarts",
            "Interpreters that died and were restarted by their worker (a reset is not counted)",
            m.interpreter_restarts.clone(),
        );
        r.register(
            "pool_cancels",
            "Cancellations by kind (requested, effective, noop, interrupted, killed)",
            m.cancels.clone(),
        );
        r.register(
            "pool_execution_modes",
            "Executions by mode (plain, top_level_await, async_def)",
            m.execution_modes.clone(),
        );
        r.register(
            "pool_checkpoints",
            "Session checkpoints of the pool's workers, by result (created, restored, failed)",
            m.checkpoints.clone(),
        );
        r.register(
            "pool_trace_events",
            "Trace events the workers handed to their sidecars, by result (sent, dropped)",
            m.trace_events.clone(),
        );
        r.register(
            "pool_blocking_call_warnings",
            "Executions whose async code contained a blocking call such as time.sleep",
            m.blocking_call_warnings.clone(),
        );
        r.register(
            "pool_transactions_rolled_back",
            "Transactions (rollbackOnError) whose namespace was put back after an error",
            m.transactions_rolled_back.clone(),
        );
        r.register(
            "pool_hits",
            "Sessions that got an idle worker at once",
            m.hits.clone(),
        );
        r.register(
            "pool_misses",
            "Sessions that had to wait for a new worker",
            m.misses.clone(),
        );
        r.register(
            "pool_acquisition_seconds",
            "Time from a session's creation to its worker being bound",
            m.acquisition.clone(),
        );
        r.register(
            "pool_acquisition_timeouts",
            "Sessions that failed waiting for a worker",
            m.acquisition_timeouts.clone(),
        );
        r.register(
            "pool_session_migrations",
            "Sessions moved to a new worker, their latest checkpoint restored there",
            m.session_migrations.clone(),
        );
        r.register(
            "pool_warmup_triggers",
            "Times idle workers fell below the warm target",
            m.warmup_triggers.clone(),
        );
        r.register(
            "pool_health_checks",
            "Health passes over the pool's workers",
            m.health_checks.clone(),
        );
        r.register(
            "pool_health_triggers",
            "Workers found unhealthy (each counted once)",
            m.health_triggers.clone(),
        );
        r.register(
            "worker_rss_bytes",
            "Resident memory of one worker (only for pools with spec.metrics.perWorker)",
            m.worker_rss_bytes.clone(),
        );
        r.register(
            "worker_cpu_usage_cores",
            "CPU of one worker in cores (only for pools with spec.metrics.perWorker)",
            m.worker_cpu_cores.clone(),
        );
        r.register(
            "worker_heartbeat_age_seconds",
            "Age of one worker's last heartbeat (only for pools with spec.metrics.perWorker)",
            m.worker_heartbeat_age.clone(),
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
        // Each counter exists from 0 as soon as its pool does: increase() and rate() cannot see
        // the first event of a series that appears with it (the first miss would not alert).
        for family in self.pool_counters() {
            drop(family.get_or_create(pool));
        }
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
        for phase in WorkerPhase::ALL {
            self.workers.remove(&PhaseLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                phase: phase.as_str(),
            });
        }
        for reason in RemovalReason::ALL {
            self.workers_removed.remove(&RemovalLabels {
                namespace: pool.namespace.clone(),
                pool: pool.pool.clone(),
                reason: reason.as_str(),
            });
        }
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
        let (ns, name) = (pool.namespace.clone(), pool.pool.clone());
        for outcome in ["ok", "error", "cancelled", "timed_out"] {
            self.executions.remove(&OutcomeLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                outcome,
            });
        }
        for result in ["enqueued", "sent", "dropped"] {
            self.outputs.remove(&OutputLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                result,
            });
        }
        for event in ["created", "resolved", "rejected", "timed_out", "cancelled"] {
            self.promises.remove(&PromiseLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                event,
            });
        }
        for result in TRACE_RESULTS {
            self.trace_events.remove(&OutputLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                result,
            });
        }
        for result in CHECKPOINT_RESULTS {
            self.checkpoints.remove(&OutputLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                result,
            });
        }
        for kind in CANCEL_KINDS {
            self.cancels.remove(&CancelLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                kind,
            });
        }
        for mode in EXECUTION_MODES {
            self.execution_modes.remove(&ModeLabels {
                namespace: ns.clone(),
                pool: name.clone(),
                mode,
            });
        }
    }
}
