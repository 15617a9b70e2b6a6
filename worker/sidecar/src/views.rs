//! The introspection views' data: traces from the buffer; pending promises, the namespace listing
//! and counters from the worker's API (with the worker credential); the pool's status summary from the
//! Kubernetes API. Every identifier passes the introspection policy's redaction; values, code and
//! output are never read.

use std::sync::Arc;

use capsule_protocol::admin::{AdminError, WorkerClient};
use capsule_protocol::execute::{NamespaceListing, WorkerStats, MAX_NAMESPACE_ENTRIES};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Map, Value};

use crate::buffer::StoredEvent;
use crate::error::{Error, Result};
use crate::receiver::Ingest;
use crate::redaction::Redactor;

/// Most executions the recent-traces view returns.
pub const MAX_RECENT_EXECUTIONS: usize = 100;

/// The sources the views read.
pub struct Sources {
    pub ingest: Arc<Ingest>,
    pub redactor: Redactor,
    /// The worker's admin API, with this pod's credential.
    pub worker: WorkerClient,
    pub kube: Option<kube::Client>,
    pub pool: String,
    pub namespace: String,
}

fn worker_error(error: AdminError) -> Error {
    Error::Worker(error.to_string())
}

impl Sources {
    fn redact_into(&self, object: &mut Map<String, Value>, key: &str, value: Option<&str>) {
        match value.and_then(|v| self.redactor.apply(v)) {
            Some(v) => {
                object.insert(key.to_owned(), Value::String(v));
            }
            None => {
                object.remove(key);
            }
        }
    }

    fn event_json(&self, event: &StoredEvent) -> Value {
        let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Value::Object(object) = &mut value {
            self.redact_into(object, "executionId", Some(&event.execution_id));
            self.redact_into(object, "session", event.session.as_deref());
            let attributes: Map<String, Value> = event
                .attributes
                .iter()
                .filter_map(|(k, v)| {
                    let shown = if k.starts_with("meta.") {
                        self.redactor.apply(v)?
                    } else {
                        v.to_string()
                    };
                    Some((k.to_string(), Value::String(shown)))
                })
                .collect();
            object.insert("attributes".into(), Value::Object(attributes));
        }
        value
    }

    /// The events of one execution; the id may be given raw or as stored (hashed).
    pub fn execution_traces(&self, execution_id: &str) -> Option<Value> {
        let buffer = self.ingest.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = buffer.execution(execution_id);
        if events.is_empty() {
            events = buffer.execution(&self.ingest.redactor.hash(execution_id));
        }
        drop(buffer);
        let first = events.first()?;
        let mut object = Map::new();
        self.redact_into(&mut object, "executionId", Some(&first.execution_id));
        let events: Vec<Value> = events.iter().map(|e| self.event_json(e)).collect();
        object.insert("events".into(), Value::Array(events));
        Some(Value::Object(object))
    }

    /// The most recent executions, newest first; with `session`, only that session's (its
    /// executions and its `session:<name>` lifecycle events), the name given raw or as stored.
    pub fn recent_traces(&self, limit: usize, session: Option<&str>) -> Value {
        let limit = limit.clamp(1, MAX_RECENT_EXECUTIONS);
        let recent = {
            let buffer = self.ingest.buffer.lock().unwrap_or_else(|e| e.into_inner());
            match session {
                None => buffer.recent(None, limit),
                Some(raw) => {
                    let found = buffer.recent(Some(raw), limit);
                    if found.is_empty() {
                        buffer.recent(Some(&self.ingest.redactor.hash(raw)), limit)
                    } else {
                        found
                    }
                }
            }
        };
        let executions: Vec<Value> = recent
            .iter()
            .map(|(id, events)| {
                let mut object = Map::new();
                self.redact_into(&mut object, "executionId", Some(id));
                self.redact_into(
                    &mut object,
                    "session",
                    events.first().and_then(|e| e.session.as_deref()),
                );
                let events: Vec<Value> = events.iter().map(|e| self.event_json(e)).collect();
                object.insert("events".into(), Value::Array(events));
                Value::Object(object)
            })
            .collect();
        json!({ "executions": executions })
    }

    /// Pending promises and input requests: id, execution, kind, age, timeout.
    pub async fn promises(&self) -> Result<Value> {
        let stats: WorkerStats = self.worker.stats().await.map_err(worker_error)?;
        let promises: Vec<Value> = stats
            .pending_promises
            .iter()
            .map(|p| {
                let mut object = Map::new();
                self.redact_into(&mut object, "id", Some(&p.id));
                self.redact_into(&mut object, "executionId", Some(&p.execution_id));
                object.insert("kind".into(), json!(p.kind));
                object.insert("ageMs".into(), json!(p.age_ms));
                object.insert("timeoutMs".into(), json!(p.timeout_ms));
                Value::Object(object)
            })
            .collect();
        Ok(json!({ "pending": promises.len(), "promises": promises }))
    }

    /// The namespace summary: counts by type, the estimated size, and the names (largest first,
    /// at most the worker's bound) with their type and size; names pass the introspection
    /// redaction (`Drop` removes them, keeping type and size). Never values.
    pub async fn namespace_summary(&self) -> Result<Value> {
        let listing: NamespaceListing = self.worker.namespace().await.map_err(worker_error)?;
        let entries: Vec<Value> = listing
            .entries
            .iter()
            .take(MAX_NAMESPACE_ENTRIES)
            .map(|entry| {
                let mut object = Map::new();
                self.redact_into(&mut object, "name", Some(&entry.name));
                object.insert("type".into(), json!(entry.type_name));
                object.insert("sizeBytes".into(), json!(entry.size_bytes));
                Value::Object(object)
            })
            .collect();
        Ok(json!({
            "names": listing.counts.names,
            "functions": listing.counts.functions,
            "classes": listing.counts.classes,
            "modules": listing.counts.modules,
            "estimatedBytes": listing.counts.estimated_bytes,
            "unpicklable": listing.counts.unpicklable,
            "entries": entries,
            "truncated": listing.truncated || listing.entries.len() > MAX_NAMESPACE_ENTRIES,
            "takenAt": listing.taken_at,
        }))
    }

    /// The worker's counters and the sidecar's own.
    pub async fn counters(&self) -> Result<Value> {
        let stats: WorkerStats = self.worker.stats().await.map_err(worker_error)?;
        let (buffered, bytes, evictions) = {
            let buffer = self.ingest.buffer.lock().unwrap_or_else(|e| e.into_inner());
            (buffer.len(), buffer.bytes(), buffer.evictions())
        };
        let mut worker = serde_json::to_value(&stats).unwrap_or(Value::Null);
        if let Value::Object(object) = &mut worker {
            object.remove("pendingPromises");
            self.redact_into(object, "session", stats.session.as_deref());
        }
        let metrics = &self.ingest.metrics;
        Ok(json!({
            "worker": worker,
            "sidecar": {
                "eventsReceived": metrics.events_received.get(),
                "eventsDropped": metrics.events_dropped.get(),
                "bufferEvents": buffered,
                "bufferBytes": bytes,
                "evictions": evictions,
                "spansExported": metrics.spans_exported.get(),
                "spanExportFailures": metrics.span_export_failures.get(),
                "spansDropped": metrics.spans_dropped.get(),
            }
        }))
    }

    /// The pool's status summary: worker counts by phase and conditions.
    pub async fn pool_status(&self) -> Result<Value> {
        let client = self
            .kube
            .clone()
            .ok_or_else(|| Error::Config("no Kubernetes credentials".into()))?;
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("capsule.dev", "v1alpha1", "CapsulePool"),
            "capsulepools",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client, &self.namespace, &resource);
        let pool = api.get(&self.pool).await?;
        let status = pool.data.get("status").cloned().unwrap_or(Value::Null);
        let mut summary = Map::new();
        summary.insert("pool".into(), json!(self.pool));
        summary.insert("namespace".into(), json!(self.namespace));
        for key in [
            "observedGeneration",
            "workers",
            "starting",
            "warming",
            "idle",
            "bound",
            "unhealthy",
            "terminating",
            "conditions",
        ] {
            summary.insert(key.into(), status.get(key).cloned().unwrap_or(Value::Null));
        }
        Ok(Value::Object(summary))
    }
}
