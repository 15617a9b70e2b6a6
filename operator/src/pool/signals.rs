//! The health signals of one worker from the relay's index and its pod: a stale heartbeat, a
//! worn-out worker, a warm-up that timed out or raised. The plan classifies workers by them.

use std::time::{Duration, Instant};

use capsule_crds::CapsulePool;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::{plan, worker_pod};
use crate::context::Context;
use crate::relay::index::WorkerRecord;

/// Whether a worker's heartbeat is stale and whether it is worn out, from the relay's index.
pub(super) fn worker_signals(
    ctx: &Context,
    pool: &CapsulePool,
    pod: &Pod,
    record: Option<&WorkerRecord>,
    now: Instant,
) -> plan::WorkerSignals {
    let spec = &pool.spec;
    let staleness = Duration::from_secs(spec.heartbeat.staleness_seconds.max(1) as u64);
    let pod_age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs())
        .unwrap_or_default();
    let stale = match record {
        Some(r) => r.lost_session || now.saturating_duration_since(r.last_seen) > staleness,
        None => {
            // Never heard from: give it the warm-up time and a staleness period, counted from
            // when this operator process started watching.
            let grace = staleness
                + Duration::from_secs(
                    spec.warmup
                        .as_ref()
                        .map_or(0, |w| w.timeout_seconds.max(0) as u64),
                );
            pod_age > grace && now.saturating_duration_since(ctx.started) > grace
        }
    };
    let rules = &spec.recycle;
    let worn_out = record.is_some_and(|r| {
        rules
            .max_executions
            .is_some_and(|max| r.totals().executions() >= max as u64)
            || rules
                .max_rss_bytes
                .is_some_and(|max| r.rss_bytes >= max as u64)
    }) || rules
        .max_age_seconds
        .is_some_and(|max| pod_age.as_secs() >= max as u64);
    // A worker whose warm-up never finishes keeps heartbeating while it warms, so staleness does
    // not catch it: the warm-up timeout counts from its worker container's start.
    let warmup_expired = spec.warmup.as_ref().is_some_and(|warmup| {
        worker_started_at(pod).is_some_and(|started| {
            Timestamp::now().duration_since(started).as_secs() > warmup.timeout_seconds.max(0)
        })
    });
    plan::WorkerSignals {
        stale,
        worn_out,
        warmup_expired,
        warmup_failed: record.is_some_and(|r| r.warmup_failure.is_some()),
    }
}

/// When the pod's worker container last started running.
fn worker_started_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == worker_pod::WORKER_CONTAINER)?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()
        .map(|t| t.0)
}
