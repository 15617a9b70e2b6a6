//! One structured audit record per introspection request, allowed or not, written to the
//! sidecar's log (stderr) under the target `capsule_sidecar::audit`:
//! `user`, `view`, `pool`, `namespace`, `decision`, `status`, `time` (RFC 3339). Nothing from the
//! request beyond the view's name, and nothing from the answer, is recorded.

use crate::metrics::Decision;

/// What one record says.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub user: &'a str,
    pub view: &'a str,
    pub pool: &'a str,
    pub namespace: &'a str,
    pub decision: Decision,
    pub status: u16,
}

pub fn write(record: &AuditRecord<'_>) {
    tracing::info!(
        target: "capsule_sidecar::audit",
        audit = true,
        user = record.user,
        view = record.view,
        pool = record.pool,
        namespace = record.namespace,
        decision = record.decision.as_str(),
        status = record.status,
        time = %jiff::Timestamp::now(),
        "introspection request"
    );
}
