//! Trace events from the worker to the sidecar: metadata only (never code, output text or values),
//! bounded and truncated at the source. Sent as frames ([`crate::frame`]) over a Unix socket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most attributes one event carries; extra ones are dropped.
pub const MAX_ATTRIBUTES: usize = 8;
/// Longest attribute key, in bytes; longer keys are truncated.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
/// Longest attribute value, in bytes; longer values are truncated.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 256;
/// Longest identifier (execution id, session, traceparent), in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// One step of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TraceEventKind {
    Submit,
    OutputFlush,
    PromiseCreated,
    PromiseResolved,
    PromiseRejected,
    PromiseTimedOut,
    PromiseCancelled,
    /// The worker stopped with promises pending; each is rejected (`PromiseRejected`, reason
    /// `shutdown`) after this.
    BridgeShutdown,
    /// A session was bound to the worker; the event's execution id is `session:<name>`.
    SessionBound,
    /// The session was released (with `reset` when a fresh interpreter takes over).
    SessionReleased,
    /// A checkpoint was written; the event's execution id is `session:<name>`, attributes carry
    /// its id, sizes and name count (never names or values).
    CheckpointCreated,
    /// A checkpoint was loaded into a fresh interpreter.
    CheckpointRestored,
    /// A checkpoint create or restore failed; the `code` attribute says why.
    CheckpointFailed,
    CancelRequested,
    CancelEffective,
    Interrupt,
    DrainTimeout,
    Result,
    Error,
}

/// The execution id that groups a session's lifecycle events (bound, released) in the trace.
pub fn session_trace_id(session: &str) -> String {
    format!("session:{session}")
}

/// Worker → sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceEvent {
    pub kind: TraceEventKind,
    pub execution_id: String,
    pub session: Option<String>,
    /// RFC 3339.
    pub timestamp: String,
    /// Time since the execution was submitted, when it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// W3C `traceparent` of the execute request, if it carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl TraceEvent {
    /// Builds an event stamped now, with identifiers truncated to their bounds.
    pub fn new(kind: TraceEventKind, execution_id: &str, session: Option<&str>) -> Self {
        TraceEvent {
            kind,
            execution_id: truncate(execution_id, MAX_ID_BYTES),
            session: session.map(|s| truncate(s, MAX_ID_BYTES)),
            timestamp: jiff::Timestamp::now().to_string(),
            duration_ms: None,
            traceparent: None,
            attributes: BTreeMap::new(),
        }
    }

    pub fn with_duration_ms(mut self, duration_ms: u64) -> Self {
        self.duration_ms = Some(duration_ms);
        self
    }

    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.map(|t| truncate(t, MAX_ID_BYTES));
        self
    }

    /// Adds a metadata attribute, truncated to the bounds; ignored past [`MAX_ATTRIBUTES`].
    pub fn with_attribute(mut self, key: &str, value: impl ToString) -> Self {
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.insert(
                truncate(key, MAX_ATTRIBUTE_KEY_BYTES),
                truncate(&value.to_string(), MAX_ATTRIBUTE_VALUE_BYTES),
            );
        }
        self
    }
}

/// Whether `value` has the W3C `traceparent` shape (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_bounded_and_truncated() {
        let mut event = TraceEvent::new(TraceEventKind::Submit, &"e".repeat(500), Some("s"));
        assert_eq!(event.execution_id.len(), MAX_ID_BYTES);
        for n in 0..20 {
            event = event.with_attribute(&format!("k{n}"), "v".repeat(1000));
        }
        assert_eq!(event.attributes.len(), MAX_ATTRIBUTES);
        assert!(event
            .attributes
            .values()
            .all(|v| v.len() == MAX_ATTRIBUTE_VALUE_BYTES));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "submit");
        assert!(json.get("executionId").is_some());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn traceparent_shape() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
    }
}
