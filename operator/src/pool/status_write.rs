//! When and how a pool's status is written: a change of phase counts or conditions soon, a change
//! only in relayed figures once per status interval, each pool at most once per
//! `SIGNIFICANT_WRITE_GAP`, as one server-side apply.

use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, CapsulePoolStatus};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::Api;
use serde_json::json;

use super::events::publish;
use super::{status, Pass};
use crate::error::Result;
use crate::labels;

/// The shortest time between two status writes of one pool, even for a change of phase counts.
const SIGNIFICANT_WRITE_GAP: Duration = Duration::from_secs(1);

/// Writes `new_status` if it changed and its turn has come; returns how long a changed status
/// still waits.
pub(super) async fn write_when_due(
    pass: &Pass<'_>,
    new_status: &CapsulePoolStatus,
    now: Instant,
) -> Result<Option<Duration>> {
    let old = pass.pool.status.as_ref();
    let changed = old != Some(new_status);
    let significant = changed && status::significant_change(old, new_status);
    let interval = pass.ctx.config.status_interval;
    let wait = pass
        .with_state(|s| wait_before_write(&mut s.last_status_write, significant, interval, now));
    if !changed {
        return Ok(None);
    }
    if !wait.is_zero() {
        return Ok(Some(wait));
    }
    write(pass, new_status).await?;
    Ok(None)
}

/// Under churn (binds, releases, refills) changes are coalesced into one write per gap. A pool
/// first seen without a significant change starts its interval now.
fn wait_before_write(
    last_write: &mut Option<Instant>,
    significant: bool,
    interval: Duration,
    now: Instant,
) -> Duration {
    let gap = if significant {
        SIGNIFICANT_WRITE_GAP.min(interval)
    } else {
        interval
    };
    let since_last = match *last_write {
        Some(last) => now.saturating_duration_since(last),
        None if significant => gap,
        None => {
            *last_write = Some(now);
            Duration::ZERO
        }
    };
    gap.saturating_sub(since_last)
}

/// Writes the status, telling once when the spec became unusable.
async fn write(pass: &Pass<'_>, new_status: &CapsulePoolStatus) -> Result<()> {
    let was_degraded = pass.pool.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason == "InvalidSpec")
    });
    if !pass.spec_usable() && !was_degraded {
        let note = pass.problems.join("; ");
        publish(pass, EventType::Warning, "InvalidSpec", "Validate", note).await;
    }
    let patch = json!({
        "apiVersion": "capsule.dev/v1alpha1",
        "kind": "CapsulePool",
        "metadata": {"name": pass.name()},
        "status": new_status,
    });
    let pools: Api<CapsulePool> = pass.api();
    pools
        .patch_status(
            pass.name(),
            &PatchParams::apply(labels::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    pass.ctx
        .metrics
        .status_writes
        .get_or_create(&pass.labels)
        .inc();
    pass.with_state(|s| s.last_status_write = Some(Instant::now()));
    Ok(())
}
