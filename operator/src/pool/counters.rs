//! The pool's own counters a pass moves: health passes and newly unhealthy workers, warm-up
//! triggers, created and restarted workers, the hit rate; with their Prometheus twins.

use std::collections::BTreeSet;

use capsule_crds::{PoolCounters, WorkerPhase};
use kube::ResourceExt;

use super::observe::Seen;
use super::plan::ClassifiedPod;
use super::Pass;
use crate::relay::index::PoolTotals;

/// Counts a health pass, and each newly unhealthy worker once.
pub(super) fn record_health(pass: &Pass<'_>, workers: &[ClassifiedPod<'_>]) {
    let (metrics, labels) = (&pass.ctx.metrics, &pass.labels);
    let unhealthy: BTreeSet<String> = workers
        .iter()
        .filter(|w| w.phase == WorkerPhase::Unhealthy)
        .map(|w| w.pod.name_any())
        .collect();
    metrics.health_checks.get_or_create(labels).inc();
    pass.with_state(|s| {
        s.counters.health.runs += 1;
        let new = unhealthy.difference(&s.unhealthy).count();
        s.counters.health.triggers += new as i64;
        if new > 0 {
            metrics
                .health_triggers
                .get_or_create(labels)
                .inc_by(new as u64);
        }
        s.unhealthy = unhealthy;
    });
}

/// Adds this pass's creations, warm-up trigger and worker restarts to the pool's counters and
/// returns them, hit rate updated.
pub(super) fn count_pass(
    pass: &Pass<'_>,
    seen: &Seen<'_>,
    created: usize,
    totals: &PoolTotals,
) -> PoolCounters {
    let idle_now = seen
        .workers
        .iter()
        .filter(|w| w.phase == WorkerPhase::Idle)
        .count();
    let below_target = pass.spec_usable() && idle_now < pass.pool.spec.replicas.max(0) as usize;
    pass.with_state(|s| {
        s.counters.workers_created += created as i64;
        if below_target && !s.below_target {
            s.counters.warmup.triggers += 1;
            pass.ctx
                .metrics
                .warmup_triggers
                .get_or_create(&pass.labels)
                .inc();
        }
        if below_target {
            s.counters.warmup.workers_created += created as i64;
        }
        s.below_target = below_target;
        let new_restarts = totals.process_restarts.saturating_sub(s.restarts_seen);
        s.counters.workers_restarted += new_restarts as i64;
        s.restarts_seen = totals.process_restarts;
        let (hits, misses) = (s.counters.hits, s.counters.misses);
        s.counters.hit_rate_percent = (hits + misses > 0)
            .then(|| format!("{:.1}", 100.0 * hits as f64 / (hits + misses) as f64));
        s.counters.clone()
    })
}
