//! Kubernetes Events about a pool. An Event that cannot be written is logged and never fails the
//! pass: the pass's work is done by then.

use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::Pass;

pub(super) async fn publish(
    pass: &Pass<'_>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = pass.ctx.recorder.publish(&event, &pass.reference).await {
        warn!(error = %e, "publishing event failed");
    }
}
