//! A bound session's live view (`status.info`), from its worker's record in the relay's index:
//! what `Session.info` showed in the seed, refreshed from heartbeats rather than asked for.

use capsule_crds::{CheckpointRef, SessionInfo};
use capsule_protocol::heartbeat::WorkerState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::relay::index::WorkerRecord;

/// The view of the session its worker serves now. Memory and CPU are rounded (MiB, whole
/// percent) so the view changes when something a person would notice changes.
pub fn live_view(record: &WorkerRecord) -> SessionInfo {
    let own = record
        .totals()
        .zip(&record.session_base, u64::saturating_sub);
    SessionInfo {
        state: match record.state {
            WorkerState::Warming => "warming",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
        }
        .into(),
        executions_ok: own.exec_ok as i64,
        executions_failed: (own.exec_error + own.exec_cancelled + own.exec_timed_out) as i64,
        pending_promises: record.pending_promises as i64,
        namespace_size: record.namespace_size as i64,
        memory_mib: (record.rss_bytes / (1024 * 1024)) as i64,
        cpu_percent: record.cpu_percent.round() as i64,
        last_activity: Some(Time(record.last_activity_at)),
        checkpoints: own.checkpoints_created as i64,
        // The worker reports its process's newest; it is this session's once the session wrote one.
        last_checkpoint: record
            .last_checkpoint
            .as_ref()
            .filter(|_| own.checkpoints_created > 0)
            .map(|c| CheckpointRef {
                id: c.id.clone(),
                size_bytes: c.size_bytes as i64,
                created_at: Some(c.created_at.clone()),
            }),
        observed_at: None,
    }
}

/// Whether `current` should be replaced by `fresh`: it differs (the write time aside) and the last
/// one was written at least `interval` ago, so a busy session writes at most once per interval.
pub fn due(
    current: Option<&SessionInfo>,
    fresh: &SessionInfo,
    now: Timestamp,
    interval: std::time::Duration,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let unchanged = SessionInfo {
        observed_at: None,
        ..current.clone()
    } == *fresh;
    let written_at = current.observed_at.as_ref().map(|t| t.0);
    let old_enough = written_at.is_none_or(|at| now.duration_since(at).unsigned_abs() >= interval);
    !unchanged && old_enough
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(ok: i64) -> SessionInfo {
        SessionInfo {
            state: "idle".into(),
            executions_ok: ok,
            ..Default::default()
        }
    }

    #[test]
    fn a_view_is_written_when_it_changed_and_at_most_once_per_interval() {
        let now = Timestamp::now();
        let interval = Duration::from_secs(10);
        assert!(due(None, &view(0), now, interval), "the first view");
        let written = SessionInfo {
            observed_at: Some(Time(now)),
            ..view(1)
        };
        assert!(
            !due(
                Some(&written),
                &view(1),
                now + Duration::from_secs(60),
                interval
            ),
            "unchanged"
        );
        assert!(
            !due(
                Some(&written),
                &view(2),
                now + Duration::from_secs(3),
                interval
            ),
            "too soon"
        );
        assert!(due(
            Some(&written),
            &view(2),
            now + Duration::from_secs(10),
            interval
        ));
    }
}
