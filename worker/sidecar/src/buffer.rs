//! The trace buffer: metadata-only events of the worker's executions, oldest first, bounded by
//! count, by age and by a hard memory cap. When a bound is hit the oldest events go first and the
//! loss is counted.
//!
//! Events are stored already redacted (see [`crate::redaction`]): under `Hash` the session, the
//! execution id and caller metadata values (`meta.*`) are keyed hashes; under `Drop` the session
//! and metadata are removed and the execution id, which keys the buffer, is hashed. Every text
//! field is cut at [`MAX_FIELD_BYTES`] (the worker truncates at the source too; this bound holds
//! even against a misbehaving writer), and at most [`MAX_ATTRIBUTES`] attributes are kept.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use capsule_protocol::trace::{truncate, TraceEvent, TraceEventKind};
use serde::Serialize;

use crate::redaction::{Redaction, Redactor};

/// Longest stored text field (ids, traceparent, attribute keys and values), in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// Most attributes stored per event.
pub const MAX_ATTRIBUTES: usize = 8;
/// Bytes accounted per event on top of its strings: the struct, its slot in the queue and the
/// allocator's per-allocation overhead.
const EVENT_OVERHEAD_BYTES: usize = std::mem::size_of::<StoredEvent>() + 16 * 8;

/// One event as kept: metadata only, redacted, bounded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub kind: TraceEventKind,
    pub execution_id: Box<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Box<str>>,
    /// As sent by the worker (RFC 3339).
    pub timestamp: Box<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Box<str>>,
    pub attributes: Vec<(Box<str>, Box<str>)>,
    #[serde(skip)]
    pub received: Instant,
    #[serde(skip)]
    pub received_at: SystemTime,
}

impl StoredEvent {
    /// Redacts and bounds one event from the wire.
    pub fn from_wire(event: TraceEvent, redactor: &Redactor) -> StoredEvent {
        let bounded = |text: &str| truncate(text, MAX_FIELD_BYTES).into_boxed_str();
        let execution_id = match redactor.mode() {
            Redaction::None => bounded(&event.execution_id),
            Redaction::Hash | Redaction::Drop => redactor.hash(&event.execution_id).into(),
        };
        let session = event
            .session
            .as_deref()
            .and_then(|s| redactor.apply(s))
            .map(|s| bounded(&s));
        let attributes = event
            .attributes
            .iter()
            .filter_map(|(key, value)| {
                // Caller metadata is free text chosen by the client: treat it like an identifier.
                if key.starts_with("meta.") {
                    redactor.apply(value).map(|v| (bounded(key), bounded(&v)))
                } else {
                    Some((bounded(key), bounded(value)))
                }
            })
            .take(MAX_ATTRIBUTES)
            .collect();
        StoredEvent {
            kind: event.kind,
            execution_id,
            session,
            timestamp: bounded(&event.timestamp),
            duration_ms: event.duration_ms,
            traceparent: event.traceparent.as_deref().map(bounded),
            attributes,
            received: Instant::now(),
            received_at: SystemTime::now(),
        }
    }

    /// Bytes this event is accounted for against the memory cap.
    pub fn accounted_bytes(&self) -> usize {
        let strings = self.execution_id.len()
            + self.session.as_ref().map_or(0, |s| s.len())
            + self.timestamp.len()
            + self.traceparent.as_ref().map_or(0, |s| s.len())
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<Box<str>>())
                .sum::<usize>();
        EVENT_OVERHEAD_BYTES + strings
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
}

/// The buffer's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_events: usize,
    pub max_age: Duration,
    pub max_bytes: usize,
}

/// Why events left the buffer early.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evictions {
    pub by_count: u64,
    pub by_bytes: u64,
    pub by_age: u64,
}

impl Evictions {
    pub fn total(&self) -> u64 {
        self.by_count + self.by_bytes + self.by_age
    }

    /// Events lost before their age bound: the loss a full buffer causes.
    pub fn early(&self) -> u64 {
        self.by_count + self.by_bytes
    }
}

/// Events of all sessions, oldest first. Not synchronised: the caller holds it behind a mutex.
#[derive(Debug)]
pub struct TraceBuffer {
    bounds: Bounds,
    events: VecDeque<StoredEvent>,
    bytes: usize,
    evictions: Evictions,
}

impl TraceBuffer {
    pub fn new(bounds: Bounds) -> Self {
        TraceBuffer {
            bounds,
            events: VecDeque::new(),
            bytes: 0,
            evictions: Evictions::default(),
        }
    }

    /// Adds an event, evicting the oldest as the bounds require.
    pub fn push(&mut self, event: StoredEvent) {
        let size = event.accounted_bytes();
        self.expire(event.received);
        while self.events.len() >= self.bounds.max_events {
            self.pop_oldest();
            self.evictions.by_count += 1;
        }
        while !self.events.is_empty() && self.bytes + size > self.bounds.max_bytes {
            self.pop_oldest();
            self.evictions.by_bytes += 1;
        }
        if size > self.bounds.max_bytes {
            // Cannot happen with the field bounds and the minimum cap, but the cap is hard.
            self.evictions.by_bytes += 1;
            return;
        }
        self.bytes += size;
        self.events.push_back(event);
    }

    /// Drops events older than the age bound.
    pub fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.events.front() {
            if now.saturating_duration_since(oldest.received) <= self.bounds.max_age {
                break;
            }
            self.pop_oldest();
            self.evictions.by_age += 1;
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(event) = self.events.pop_front() {
            self.bytes -= event.accounted_bytes();
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// The events of one execution (by its stored id), oldest first.
    pub fn execution(&self, execution_id: &str) -> Vec<StoredEvent> {
        self.events
            .iter()
            .filter(|e| &*e.execution_id == execution_id)
            .cloned()
            .collect()
    }

    /// The most recent `limit` executions (of `session` when given), newest first, each with its
    /// events oldest first.
    pub fn recent(&self, session: Option<&str>, limit: usize) -> Vec<(Box<str>, Vec<StoredEvent>)> {
        let mut order: Vec<Box<str>> = Vec::new();
        for event in self.events.iter().rev() {
            if session.is_some_and(|s| event.session.as_deref() != Some(s)) {
                continue;
            }
            if !order.contains(&event.execution_id) {
                if order.len() == limit {
                    break;
                }
                order.push(event.execution_id.clone());
            }
        }
        order
            .into_iter()
            .map(|id| {
                let events = self.execution(&id);
                (id, events)
            })
            .collect()
    }
}
