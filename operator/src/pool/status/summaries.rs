//! `status.workerSummaries`: one row per worker from its pod and its last heartbeat, the busiest
//! first and bounded so a large pool's status stays small.

use capsule_crds::{WorkerSummary, MAX_WORKER_SUMMARIES};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::Observation;
use crate::labels;

pub(super) fn worker_summaries(seen: &Observation<'_>) -> Vec<WorkerSummary> {
    let mut summaries: Vec<WorkerSummary> = seen
        .workers
        .iter()
        .map(|w| {
            let name = w.pod.name_any();
            let record = seen.records.get(&name);
            WorkerSummary {
                session: w.pod.labels().get(labels::SESSION).cloned(),
                phase: w.phase,
                last_heartbeat: record.map(|r| Time(r.last_seen_at)),
                rss_bytes: record.map_or(0, |r| r.rss_bytes as i64),
                worker_rss_bytes: record.map_or(0, |r| r.worker_rss_bytes as i64),
                cpu_percent: record.map_or(0.0, |r| (r.cpu_percent * 10.0).round() / 10.0),
                namespace_size: record.map_or(0, |r| r.namespace_size as i64),
                executions: record.map_or(0, |r| r.totals().executions() as i64),
                pod: name,
            }
        })
        .collect();
    // The busiest first, so the rows that matter survive the bound.
    summaries.sort_by(|a, b| {
        b.executions
            .cmp(&a.executions)
            .then_with(|| a.pod.cmp(&b.pod))
    });
    summaries.truncate(MAX_WORKER_SUMMARIES);
    summaries
}
