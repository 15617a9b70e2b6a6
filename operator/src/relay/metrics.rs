//! The relay index's Prometheus series, read from the index at each scrape: what a pool's workers
//! use now, the pool's relayed totals, and per-worker series for pools that ask for them. Only
//! pools the pool controller has published are served, so label sets stay bounded by live pools
//! and workers.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::index::{Counters, PoolKey, PublishedPool, WorkerIndex, WorkerRecord};

/// Serves the index's series; registered once, next to the operator's other metrics.
#[derive(Debug)]
pub struct RelayMetrics {
    index: Arc<WorkerIndex>,
}

impl RelayMetrics {
    /// Registers the series of `index` in `registry`, as `capsule_<name>`.
    pub fn register(registry: &mut Registry, index: Arc<WorkerIndex>) {
        registry
            .sub_registry_with_prefix("capsule")
            .register_collector(Box::new(Self { index }));
    }
}

impl Collector for RelayMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let now = Instant::now();
        let pools = self.index.published_pools();
        if !pools.is_empty() {
            for family in POOL_FAMILIES {
                let mut series = encoder.encode_descriptor(
                    family.name,
                    family.help,
                    None,
                    family.kind.metric_type(),
                )?;
                for (key, pool) in &pools {
                    let figure = (family.figure)(pool, now);
                    encode_series(&mut series, &pool_labels(key), family.kind, figure)?;
                }
            }
            for family in VALUE_FAMILIES {
                encode_value_family(&mut encoder, family, &pools)?;
            }
        }
        encode_worker_families(&mut encoder, &pools, now)
    }
}

/// How a family's series behave.
#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
        }
    }
}

/// The figure of one series: a whole count, or a fraction (seconds, cores).
#[derive(Clone, Copy)]
enum Figure {
    Whole(u64),
    Fraction(f64),
}

/// A family with one series per pool.
struct PoolFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    figure: fn(&PublishedPool, Instant) -> Figure,
}

/// A counter family with one series per pool and value of its one bounded label.
struct ValueFamily {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    series: &'static [ValueSeries],
}

/// One value of a [`ValueFamily`]'s label and the counter its series shows.
type ValueSeries = (&'static str, fn(&Counters) -> u64);

/// A gauge family with one series per worker of the pools that ask for them.
struct WorkerFamily {
    name: &'static str,
    help: &'static str,
    figure: fn(&WorkerRecord, Instant) -> Figure,
}

const POOL_FAMILIES: &[PoolFamily] = &[
    PoolFamily {
        name: "pool_rss_bytes",
        help: "Resident memory of the pool's workers and interpreters",
        kind: Kind::Gauge,
        figure: |p, _| Figure::Whole(p.workers.iter().map(|(_, r)| r.rss_bytes).sum()),
    },
    PoolFamily {
        name: "pool_cpu_usage_cores",
        help: "CPU of the pool's workers and interpreters, in cores",
        kind: Kind::Gauge,
        figure: |p, _| Figure::Fraction(p.workers.iter().map(|(_, r)| cpu_cores(r)).sum()),
    },
    PoolFamily {
        name: "pool_cpu_seconds",
        help: "CPU time of the pool's workers and interpreters, across interpreter resets",
        kind: Kind::Counter,
        figure: |p, _| Figure::Fraction(p.totals.counters.cpu_millis as f64 / 1000.0),
    },
    PoolFamily {
        name: "pool_namespace_names",
        help: "Names defined in the pool's interpreter namespaces",
        kind: Kind::Gauge,
        figure: |p, _| Figure::Whole(p.workers.iter().map(|(_, r)| r.namespace_size).sum()),
    },
    PoolFamily {
        name: "pool_heartbeat_age_seconds",
        help: "Age of the oldest last heartbeat among the pool's workers",
        kind: Kind::Gauge,
        figure: |p, now| {
            let ages = p.workers.iter().map(|(_, r)| heartbeat_age(r, now));
            Figure::Fraction(ages.fold(0.0, f64::max))
        },
    },
    PoolFamily {
        name: "pool_output_queue_max_depth",
        help: "Deepest output queue any worker of the pool reported",
        kind: Kind::Gauge,
        figure: |p, _| Figure::Whole(p.totals.max_queue_depth),
    },
    PoolFamily {
        name: "pool_output_drain_timeouts",
        help: "Executions that ended with OutputDrainTimeout",
        kind: Kind::Counter,
        figure: |p, _| Figure::Whole(p.totals.counters.drain_timeouts),
    },
    PoolFamily {
        name: "pool_promises_pending",
        help: "Bridge promises pending now",
        kind: Kind::Gauge,
        figure: |p, _| Figure::Whole(p.totals.pending_promises),
    },
    PoolFamily {
        name: "pool_promises_high_water",
        help: "Most bridge promises pending at once on one worker",
        kind: Kind::Gauge,
        figure: |p, _| Figure::Whole(p.totals.promise_high_water),
    },
    PoolFamily {
        name: "pool_worker_restarts",
        help: "Worker processes that started again",
        kind: Kind::Counter,
        figure: |p, _| Figure::Whole(p.totals.process_restarts),
    },
    PoolFamily {
        name: "pool_interpreter_restarts",
        help: "Interpreters that died and were restarted by their worker (a reset is not counted)",
        kind: Kind::Counter,
        figure: |p, _| Figure::Whole(p.totals.counters.interpreter_restarts),
    },
    PoolFamily {
        name: "pool_blocking_call_warnings",
        help: "Executions whose async code contained a blocking call such as time.sleep",
        kind: Kind::Counter,
        figure: |p, _| Figure::Whole(p.totals.counters.blocking_call_warnings),
    },
    PoolFamily {
        name: "pool_transactions_rolled_back",
        help: "Transactions (rollbackOnError) whose namespace was put back after an error",
        kind: Kind::Counter,
        figure: |p, _| Figure::Whole(p.totals.counters.transactions_rolled_back),
    },
];

const VALUE_FAMILIES: &[ValueFamily] = &[
    ValueFamily {
        name: "pool_executions",
        help: "Executions by outcome (ok, error, cancelled, timed_out)",
        label: "outcome",
        series: &[
            ("ok", |c| c.exec_ok),
            ("error", |c| c.exec_error),
            ("cancelled", |c| c.exec_cancelled),
            ("timed_out", |c| c.exec_timed_out),
        ],
    },
    ValueFamily {
        name: "pool_outputs",
        help: "Output chunks by result (enqueued, sent, dropped)",
        label: "result",
        series: &[
            ("enqueued", |c| c.outputs_enqueued),
            ("sent", |c| c.outputs_sent),
            ("dropped", |c| c.outputs_dropped),
        ],
    },
    ValueFamily {
        name: "pool_promises",
        help: "Bridge promises by event (created, resolved, rejected, timed_out, cancelled)",
        label: "event",
        series: &[
            ("created", |c| c.promises_created),
            ("resolved", |c| c.promises_resolved),
            ("rejected", |c| c.promises_rejected),
            ("timed_out", |c| c.promises_timed_out),
            ("cancelled", |c| c.promises_cancelled),
        ],
    },
    ValueFamily {
        name: "pool_cancels",
        help: "Cancellations by kind (requested, effective, noop, interrupted, killed)",
        label: "kind",
        series: &[
            ("requested", |c| c.cancels_requested),
            ("effective", |c| c.cancels_effective),
            ("noop", |c| c.cancels_noop),
            ("interrupted", |c| c.cancels_interrupted),
            ("killed", |c| c.cancels_killed),
        ],
    },
    ValueFamily {
        name: "pool_execution_modes",
        help: "Executions by mode (plain, top_level_await, async_def)",
        label: "mode",
        series: &[
            ("plain", |c| c.mode_plain),
            ("top_level_await", |c| c.mode_top_level_await),
            ("async_def", |c| c.mode_async_def),
        ],
    },
    ValueFamily {
        name: "pool_checkpoints",
        help: "Session checkpoints of the pool's workers, by result (created, restored, failed)",
        label: "result",
        series: &[
            ("created", |c| c.checkpoints_created),
            ("restored", |c| c.checkpoints_restored),
            ("failed", |c| c.checkpoint_failures),
        ],
    },
    ValueFamily {
        name: "pool_trace_events",
        help: "Trace events the workers handed to their sidecars, by result (sent, dropped)",
        label: "result",
        series: &[("sent", |c| c.trace_sent), ("dropped", |c| c.trace_dropped)],
    },
];

const WORKER_FAMILIES: &[WorkerFamily] = &[
    WorkerFamily {
        name: "worker_rss_bytes",
        help: "Resident memory of one worker (only for pools with spec.metrics.perWorker)",
        figure: |r, _| Figure::Whole(r.rss_bytes),
    },
    WorkerFamily {
        name: "worker_cpu_usage_cores",
        help: "CPU of one worker in cores (only for pools with spec.metrics.perWorker)",
        figure: |r, _| Figure::Fraction(cpu_cores(r)),
    },
    WorkerFamily {
        name: "worker_heartbeat_age_seconds",
        help: "Age of one worker's last heartbeat (only for pools with spec.metrics.perWorker)",
        figure: |r, now| Figure::Fraction(heartbeat_age(r, now)),
    },
];

fn encode_value_family(
    encoder: &mut DescriptorEncoder,
    family: &ValueFamily,
    pools: &[(PoolKey, PublishedPool)],
) -> Result<(), fmt::Error> {
    let mut series =
        encoder.encode_descriptor(family.name, family.help, None, MetricType::Counter)?;
    for ((namespace, pool), published) in pools {
        for (value, total) in family.series {
            let labels = [
                ("namespace", namespace.as_str()),
                ("pool", pool.as_str()),
                (family.label, value),
            ];
            let figure = Figure::Whole(total(&published.totals.counters));
            encode_series(&mut series, &labels, Kind::Counter, figure)?;
        }
    }
    Ok(())
}

/// The per-worker families, left out while no pool asks for them (an empty family is not shown).
fn encode_worker_families(
    encoder: &mut DescriptorEncoder,
    pools: &[(PoolKey, PublishedPool)],
    now: Instant,
) -> Result<(), fmt::Error> {
    let workers: Vec<([(&str, &str); 3], &WorkerRecord)> = pools
        .iter()
        .filter(|(_, published)| published.per_worker)
        .flat_map(|((namespace, pool), published)| {
            published.workers.iter().map(move |(pod, record)| {
                let labels = [
                    ("namespace", namespace.as_str()),
                    ("pool", pool.as_str()),
                    ("pod", pod.as_str()),
                ];
                (labels, record)
            })
        })
        .collect();
    if workers.is_empty() {
        return Ok(());
    }
    for family in WORKER_FAMILIES {
        let mut series =
            encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
        for (labels, record) in &workers {
            let figure = (family.figure)(record, now);
            encode_series(&mut series, labels, Kind::Gauge, figure)?;
        }
    }
    Ok(())
}

fn pool_labels((namespace, pool): &PoolKey) -> [(&'static str, &str); 2] {
    [("namespace", namespace.as_str()), ("pool", pool.as_str())]
}

fn encode_series(
    family: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    kind: Kind,
    figure: Figure,
) -> Result<(), fmt::Error> {
    let mut series = family.encode_family(labels)?;
    match (kind, figure) {
        (Kind::Counter, Figure::Whole(v)) => series.encode_counter::<NoLabelSet, _, u64>(&v, None),
        (Kind::Counter, Figure::Fraction(v)) => {
            series.encode_counter::<NoLabelSet, _, f64>(&v, None)
        }
        (Kind::Gauge, Figure::Whole(v)) => series.encode_gauge(&v),
        (Kind::Gauge, Figure::Fraction(v)) => series.encode_gauge(&v),
    }
}

fn cpu_cores(record: &WorkerRecord) -> f64 {
    record.cpu_percent / 100.0
}

fn heartbeat_age(record: &WorkerRecord, now: Instant) -> f64 {
    now.saturating_duration_since(record.last_seen)
        .as_secs_f64()
}
