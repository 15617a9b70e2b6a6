//! The trace buffer's bounds and the redaction modes, through the library.

use std::time::{Duration, Instant};

use capsule_protocol::trace::{TraceEvent, TraceEventKind};
use capsule_sidecar::buffer::{Bounds, StoredEvent, TraceBuffer, MAX_FIELD_BYTES};
use capsule_sidecar::redaction::{keyed_hash, Redaction, Redactor, HASH_PREFIX};

const KEY: &[u8] = b"pool-secret-token";

fn event(execution: &str) -> TraceEvent {
    TraceEvent::new(TraceEventKind::Submit, execution, Some("session-1"))
        .with_attribute("codeBytes", 12)
        .with_attribute("meta.user", "alice")
}

fn stored(execution: &str, mode: Redaction) -> StoredEvent {
    StoredEvent::from_wire(event(execution), &Redactor::new(mode, KEY))
}

fn bounds(max_events: usize, max_bytes: usize) -> Bounds {
    Bounds {
        max_events,
        max_age: Duration::from_secs(3600),
        max_bytes,
    }
}

#[test]
fn count_bound_evicts_the_oldest_and_counts_them() {
    let mut buffer = TraceBuffer::new(bounds(3, 1 << 20));
    for n in 0..5 {
        buffer.push(stored(&format!("e{n}"), Redaction::None));
    }
    assert_eq!(buffer.len(), 3);
    assert_eq!(buffer.evictions().by_count, 2);
    assert!(buffer.execution("e0").is_empty(), "oldest went first");
    assert!(buffer.execution("e1").is_empty());
    assert_eq!(buffer.execution("e4").len(), 1);
}

#[test]
fn memory_cap_holds_and_counts_the_loss() {
    let one = stored("e0", Redaction::None).accounted_bytes();
    let cap = one * 10 + one / 2;
    let mut buffer = TraceBuffer::new(bounds(1_000_000, cap));
    for n in 0..100 {
        buffer.push(stored(&format!("e{n:02}"), Redaction::None));
        assert!(buffer.bytes() <= cap, "cap exceeded at event {n}");
    }
    assert_eq!(buffer.len(), 10);
    assert_eq!(buffer.evictions().by_bytes, 90);
    assert_eq!(buffer.evictions().by_count, 0);
    assert_eq!(buffer.execution("e99").len(), 1);
}

#[test]
fn age_bound_expires_old_events() {
    let mut buffer = TraceBuffer::new(Bounds {
        max_events: 100,
        max_age: Duration::from_secs(60),
        max_bytes: 1 << 20,
    });
    buffer.push(stored("old", Redaction::None));
    buffer.push(stored("new", Redaction::None));
    buffer.expire(Instant::now() + Duration::from_secs(30));
    assert_eq!(buffer.len(), 2);
    buffer.expire(Instant::now() + Duration::from_secs(61));
    assert_eq!(buffer.len(), 0);
    assert_eq!(buffer.evictions().by_age, 2);
    assert_eq!(buffer.evictions().early(), 0, "expiry is not a loss");
    assert_eq!(buffer.bytes(), 0);
}

#[test]
fn recent_groups_by_execution_newest_first() {
    let mut buffer = TraceBuffer::new(bounds(100, 1 << 20));
    for execution in ["a", "b", "a", "c"] {
        buffer.push(stored(execution, Redaction::None));
    }
    let recent = buffer.recent(None, 2);
    let ids: Vec<&str> = recent.iter().map(|(id, _)| &**id).collect();
    assert_eq!(ids, ["c", "a"]);
    assert_eq!(recent[1].1.len(), 2);
    assert!(buffer.recent(Some("other"), 10).is_empty());
    assert_eq!(buffer.recent(Some("session-1"), 10).len(), 3);
}

#[test]
fn none_keeps_identifiers() {
    let event = stored("exec-1", Redaction::None);
    assert_eq!(&*event.execution_id, "exec-1");
    assert_eq!(event.session.as_deref(), Some("session-1"));
    assert_eq!(event.attribute("meta.user"), Some("alice"));
    assert_eq!(event.attribute("codeBytes"), Some("12"));
}

#[test]
fn hash_is_keyed_and_stable() {
    let first = stored("exec-1", Redaction::Hash);
    let again = stored("exec-1", Redaction::Hash);
    assert_eq!(
        first.execution_id, again.execution_id,
        "stable within the pool"
    );
    assert_eq!(&*first.execution_id, keyed_hash(KEY, "exec-1"));
    assert!(first.execution_id.starts_with(HASH_PREFIX));
    assert_eq!(
        first.session.as_deref(),
        Some(&*keyed_hash(KEY, "session-1"))
    );
    assert_eq!(
        first.attribute("meta.user"),
        Some(&*keyed_hash(KEY, "alice"))
    );
    assert_eq!(first.attribute("codeBytes"), Some("12"), "numbers stay");
    let other_pool =
        StoredEvent::from_wire(event("exec-1"), &Redactor::new(Redaction::Hash, b"other"));
    assert_ne!(
        other_pool.execution_id, first.execution_id,
        "keyed per pool"
    );
    // Hashing an already hashed value leaves it as it is.
    let redactor = Redactor::new(Redaction::Hash, KEY);
    assert_eq!(redactor.hash(&first.execution_id), &*first.execution_id);
}

#[test]
fn drop_removes_session_and_metadata_but_keeps_a_correlatable_key() {
    let event = stored("exec-1", Redaction::Drop);
    assert_eq!(event.session, None);
    assert_eq!(event.attribute("meta.user"), None);
    assert_eq!(&*event.execution_id, keyed_hash(KEY, "exec-1"));
    assert_eq!(event.attribute("codeBytes"), Some("12"));
}

#[test]
fn long_fields_are_truncated_at_the_documented_bound() {
    let mut wire = TraceEvent::new(TraceEventKind::Result, "e", Some("s"));
    // Bypass the worker's own truncation, as a misbehaving writer would.
    wire.execution_id = "x".repeat(10_000);
    wire.session = Some("é".repeat(5_000));
    for n in 0..50 {
        wire.attributes
            .insert(format!("k{n:02}{}", "k".repeat(1000)), "v".repeat(10_000));
    }
    let event = StoredEvent::from_wire(wire, &Redactor::new(Redaction::None, KEY));
    assert_eq!(event.execution_id.len(), MAX_FIELD_BYTES);
    assert!(event.session.as_ref().unwrap().len() <= MAX_FIELD_BYTES);
    assert_eq!(
        event.attributes.len(),
        capsule_sidecar::buffer::MAX_ATTRIBUTES
    );
    assert!(event
        .attributes
        .iter()
        .all(|(k, v)| k.len() <= MAX_FIELD_BYTES && v.len() <= MAX_FIELD_BYTES));
    assert!(event.accounted_bytes() < 8 * 1024);
}
