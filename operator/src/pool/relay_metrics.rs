//! The copy of the relay's index into Prometheus: pool-wide usage gauges, counters raised to the
//! relayed totals, and per-worker series for pools that ask for them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Pass;
use crate::metrics::{
    raise_each, raise_to, raise_to_f64, Metrics, PoolLabels, CANCEL_KINDS, CHECKPOINT_RESULTS,
    EXECUTION_MODES, EXECUTION_OUTCOMES, OUTPUT_RESULTS, PROMISE_EVENTS, TRACE_RESULTS,
};
use crate::relay::index::{PoolTotals, WorkerRecord};

/// Publishes what the relay knows of the pool's workers.
pub(super) fn publish(
    pass: &Pass<'_>,
    totals: &PoolTotals,
    records: &BTreeMap<String, WorkerRecord>,
    now: Instant,
) {
    let metrics = &pass.ctx.metrics;
    publish_usage(metrics, &pass.labels, records, now);
    publish_totals(metrics, &pass.labels, totals);
    publish_per_worker(pass, records, now);
}

/// Gauges of what the workers use now, summed over the pool.
fn publish_usage(
    m: &Metrics,
    labels: &PoolLabels,
    records: &BTreeMap<String, WorkerRecord>,
    now: Instant,
) {
    m.rss_bytes
        .get_or_create(labels)
        .set(records.values().map(|r| r.rss_bytes as i64).sum());
    m.cpu_cores
        .get_or_create(labels)
        .set(records.values().map(cpu_cores).sum());
    m.namespace_names
        .get_or_create(labels)
        .set(records.values().map(|r| r.namespace_size as i64).sum());
    let oldest = records
        .values()
        .map(|r| heartbeat_age(r, now))
        .fold(0.0, f64::max);
    m.heartbeat_age.get_or_create(labels).set(oldest);
}

/// Counters raised to the relayed totals, and the gauges of the pool's queues and promises.
fn publish_totals(m: &Metrics, labels: &PoolLabels, totals: &PoolTotals) {
    let c = &totals.counters;
    raise_to_f64(
        &m.cpu_seconds.get_or_create(labels),
        c.cpu_millis as f64 / 1000.0,
    );
    let pool_counters: [(&Family<PoolLabels, Counter>, u64); 5] = [
        (&m.drain_timeouts, c.drain_timeouts),
        (&m.interpreter_restarts, c.interpreter_restarts),
        (&m.blocking_call_warnings, c.blocking_call_warnings),
        (&m.transactions_rolled_back, c.transactions_rolled_back),
        (&m.worker_restarts, totals.process_restarts),
    ];
    for (family, total) in pool_counters {
        raise_to(&family.get_or_create(labels), total);
    }
    let executions = [c.exec_ok, c.exec_error, c.exec_cancelled, c.exec_timed_out];
    raise_each(&m.executions, labels, EXECUTION_OUTCOMES, executions);
    let outputs = [c.outputs_enqueued, c.outputs_sent, c.outputs_dropped];
    raise_each(&m.outputs, labels, OUTPUT_RESULTS, outputs);
    let promises = [
        c.promises_created,
        c.promises_resolved,
        c.promises_rejected,
        c.promises_timed_out,
        c.promises_cancelled,
    ];
    raise_each(&m.promises, labels, PROMISE_EVENTS, promises);
    let cancels = [
        c.cancels_requested,
        c.cancels_effective,
        c.cancels_noop,
        c.cancels_interrupted,
        c.cancels_killed,
    ];
    raise_each(&m.cancels, labels, CANCEL_KINDS, cancels);
    let traces = [c.trace_sent, c.trace_dropped];
    raise_each(&m.trace_events, labels, TRACE_RESULTS, traces);
    let checkpoints = [
        c.checkpoints_created,
        c.checkpoints_restored,
        c.checkpoint_failures,
    ];
    raise_each(&m.checkpoints, labels, CHECKPOINT_RESULTS, checkpoints);
    let modes = [c.mode_plain, c.mode_top_level_await, c.mode_async_def];
    raise_each(&m.execution_modes, labels, EXECUTION_MODES, modes);
    m.output_queue_max_depth
        .get_or_create(labels)
        .set(totals.max_queue_depth as i64);
    m.promises_pending
        .get_or_create(labels)
        .set(totals.pending_promises as i64);
    m.promises_high_water
        .get_or_create(labels)
        .set(totals.promise_high_water as i64);
}

/// Per-worker series only where the pool asks for them; removed when the worker goes.
fn publish_per_worker(pass: &Pass<'_>, records: &BTreeMap<String, WorkerRecord>, now: Instant) {
    let m = &pass.ctx.metrics;
    let wanted: BTreeSet<String> = if pass.pool.spec.metrics.per_worker {
        records.keys().cloned().collect()
    } else {
        Default::default()
    };
    let previous = pass.ctx.ledger.update(&pass.key, |s| {
        std::mem::replace(&mut s.per_worker_series, wanted.clone())
    });
    for gone in previous.difference(&wanted) {
        m.forget_worker(&pass.labels.worker(gone.clone()));
    }
    for pod in &wanted {
        let r = &records[pod];
        let labels = pass.labels.worker(pod.clone());
        m.worker_rss_bytes
            .get_or_create(&labels)
            .set(r.rss_bytes as i64);
        m.worker_cpu_cores.get_or_create(&labels).set(cpu_cores(r));
        m.worker_heartbeat_age
            .get_or_create(&labels)
            .set(heartbeat_age(r, now));
    }
}

fn cpu_cores(record: &WorkerRecord) -> f64 {
    record.cpu_percent / 100.0
}

fn heartbeat_age(record: &WorkerRecord, now: Instant) -> f64 {
    now.saturating_duration_since(record.last_seen)
        .as_secs_f64()
}
