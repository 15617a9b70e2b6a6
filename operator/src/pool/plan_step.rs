//! The plan step: the pure plan for the pool's spec and waiting sessions, with surplus workers
//! held back for the scale-down delay and workers whose session is gone added to the deletes.

use std::time::Duration;

use super::observe::Seen;
use super::orphaned_bindings::orphaned_bindings;
use super::plan::{self, Plan, RemovalReason};
use super::waiting_sessions::waiting_sessions;
use super::{scale_down, Pass};
use crate::error::Result;

pub(super) struct Planned {
    pub(super) plan: Plan,
    /// How long surplus workers are still kept before they are scaled down.
    pub(super) surplus_kept_for: Option<Duration>,
}

pub(super) async fn decide(pass: &Pass<'_>, seen: &Seen<'_>) -> Result<Planned> {
    let pool = pass.pool;
    let waiting = waiting_sessions(pass.ctx, pass.namespace(), pass.name());
    let mut plan = if pass.spec_usable() {
        plan::plan(pool, &seen.workers, waiting)
    } else {
        Plan::default()
    };
    let scale_down_delay = Duration::from_secs(pool.spec.scale_down_delay_seconds.max(0) as u64);
    let surplus_kept_for = pass.with_state(|s| {
        s.surplus_hold.apply(
            &mut plan,
            scale_down::Target::of(&pool.spec),
            scale_down_delay,
            seen.now,
        )
    });
    for orphan in orphaned_bindings(pass.ctx, pass.namespace(), &seen.workers).await? {
        if !plan.delete.iter().any(|(pod, _)| *pod == orphan) {
            plan.delete.push((orphan, RemovalReason::Released));
        }
    }
    Ok(Planned {
        plan,
        surplus_kept_for,
    })
}
