//! OTLP export: one span per execution, with its trace events as span events, parented to the
//! execute request's `traceparent` so a trace runs from the client through the worker.
//!
//! Ingest never waits on the exporter: finished spans go through a queue of
//! [`EXPORT_QUEUE_SPANS`]; when it is full (receiver down or slow) the span is dropped and counted.
//! Executions still open are held in a map of at most [`MAX_OPEN_EXECUTIONS`] (the oldest is
//! dropped, counted, when a new one does not fit) with at most [`MAX_EVENTS_PER_SPAN`] events each
//! (further events are counted in the span's dropped-events count).
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (unset = no export), `OTEL_EXPORTER_OTLP_PROTOCOL` /
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (`http/protobuf`, the default, or `grpc`),
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (read by
//! [`capsule_telemetry::otlp`]). The pod's identity (`k8s.namespace.name`, `k8s.pod.name`,
//! `capsule.pool`) is on the resource; a span left out by the sampler is counted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use capsule_protocol::trace::TraceEventKind;
use capsule_telemetry::otlp::{OtlpSettings, Protocol};
use capsule_telemetry::sampler::Sampler;
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;

use crate::buffer::StoredEvent;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Finished spans waiting for the exporter.
pub const EXPORT_QUEUE_SPANS: usize = 2048;
/// Executions whose span is still open.
pub const MAX_OPEN_EXECUTIONS: usize = 1024;
/// Events kept per span.
pub const MAX_EVENTS_PER_SPAN: usize = 128;
/// Spans sent per OTLP request.
const EXPORT_BATCH_SPANS: usize = 512;
/// An execution with no final event after this long is dropped (counted).
const OPEN_EXECUTION_TTL: Duration = Duration::from_secs(3600);

/// The pod's identity, written on the resource.
#[derive(Debug, Clone, Default)]
pub struct SpanIdentity {
    pub pool: String,
    pub namespace: String,
    pub pod: String,
}

#[derive(Debug)]
struct OpenSpan {
    opened: Instant,
    start: SystemTime,
    session: Option<Box<str>>,
    traceparent: Option<Box<str>>,
    events: Vec<Event>,
    dropped_events: u32,
}

/// Gathers each execution's events and hands its span to the export task when it ends.
#[derive(Debug)]
pub struct SpanAssembler {
    open: Mutex<HashMap<Box<str>, OpenSpan>>,
    sampler: Sampler,
    queue: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

impl SpanAssembler {
    /// Starts the export task (on the current tokio runtime) and returns the assembler feeding it.
    pub fn start(
        settings: OtlpSettings,
        identity: SpanIdentity,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let mut exporter = build_exporter(settings.protocol)?;
        let attributes = vec![
            KeyValue::new("k8s.namespace.name", identity.namespace),
            KeyValue::new("k8s.pod.name", identity.pod),
            KeyValue::new("capsule.pool", identity.pool),
        ];
        exporter.set_resource(&capsule_telemetry::otlp::resource(
            "capsule-worker",
            attributes,
        ));
        let (queue, rx) = mpsc::channel(EXPORT_QUEUE_SPANS);
        tokio::spawn(export_loop(exporter, rx, metrics.clone()));
        Ok(SpanAssembler {
            open: Mutex::new(HashMap::new()),
            sampler: settings.sampler,
            queue,
            metrics,
        })
    }

    /// Adds one (already redacted) event; a final event closes the span and queues it.
    pub fn observe(&self, event: &StoredEvent) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !open.contains_key(&event.execution_id) {
            if event.kind != TraceEventKind::Submit {
                // Late events of a finished execution (or a span we never saw open) are kept in
                // the buffer only.
                return;
            }
            self.make_room(&mut open);
            open.insert(
                event.execution_id.clone(),
                OpenSpan {
                    opened: Instant::now(),
                    start: parse_time(&event.timestamp).unwrap_or(event.received_at),
                    session: event.session.clone(),
                    traceparent: event.traceparent.clone(),
                    events: Vec::new(),
                    dropped_events: 0,
                },
            );
        }
        let span = open.get_mut(&event.execution_id).expect("inserted above");
        if span.events.len() < MAX_EVENTS_PER_SPAN {
            span.events.push(to_span_event(event));
        } else {
            span.dropped_events += 1;
        }
        if is_final(event) {
            let span = open.remove(&event.execution_id).expect("present");
            drop(open);
            let end = parse_time(&event.timestamp).unwrap_or(event.received_at);
            let data = self.finish(&event.execution_id, span, end, event.attribute("outcome"));
            let parent_sampled = data
                .parent_span_is_remote
                .then(|| data.span_context.is_sampled());
            let trace_id = data.span_context.trace_id().to_bytes();
            if !self.sampler.should_sample(trace_id, parent_sampled) {
                self.metrics.spans_not_sampled.inc();
            } else if self.queue.try_send(data).is_err() {
                self.metrics.spans_dropped.inc();
            }
        }
    }

    fn make_room(&self, open: &mut HashMap<Box<str>, OpenSpan>) {
        let before = open.len();
        open.retain(|_, span| span.opened.elapsed() < OPEN_EXECUTION_TTL);
        if open.len() >= MAX_OPEN_EXECUTIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, span)| span.opened)
                .map(|(id, _)| id.clone())
            {
                open.remove(&oldest);
            }
        }
        self.metrics
            .spans_dropped
            .inc_by((before - open.len()) as u64);
    }

    fn finish(
        &self,
        execution_id: &str,
        span: OpenSpan,
        end: SystemTime,
        outcome: Option<&str>,
    ) -> SpanData {
        let parent = span.traceparent.as_deref().and_then(parse_traceparent);
        let trace_id = parent.map_or_else(random_trace_id, |(trace_id, _, _)| trace_id);
        let flags = parent.map_or(TraceFlags::SAMPLED, |(_, _, flags)| flags);
        let mut attributes = vec![KeyValue::new(
            "capsule.execution_id",
            execution_id.to_owned(),
        )];
        if let Some(session) = span.session {
            attributes.push(KeyValue::new("capsule.session", session.to_string()));
        }
        if let Some(outcome) = outcome {
            attributes.push(KeyValue::new("capsule.outcome", outcome.to_owned()));
        }
        let status = match outcome {
            Some("Ok") => Status::Ok,
            Some("Error") => Status::error("execution failed"),
            _ => Status::Unset,
        };
        let mut events = SpanEvents::default();
        events.events = span.events;
        events.dropped_count = span.dropped_events;
        SpanData {
            span_context: SpanContext::new(
                trace_id,
                random_span_id(),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent.map_or(SpanId::INVALID, |(_, span_id, _)| span_id),
            parent_span_is_remote: parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("capsule.execute"),
            start_time: span.start,
            end_time: end.max(span.start),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("capsule-sidecar")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }
}

/// The worker's final events: `result`, `error`, and `cancelEffective` for a cancel or timeout,
/// each carrying the `outcome` attribute.
fn is_final(event: &StoredEvent) -> bool {
    matches!(
        event.kind,
        TraceEventKind::Result | TraceEventKind::Error | TraceEventKind::CancelEffective
    ) && event.attribute("outcome").is_some()
}

fn to_span_event(event: &StoredEvent) -> Event {
    let mut attributes: Vec<KeyValue> = event
        .attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
        .collect();
    if let Some(duration) = event.duration_ms {
        attributes.push(KeyValue::new("durationMs", duration as i64));
    }
    let name = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Event::new(
        name,
        parse_time(&event.timestamp).unwrap_or(event.received_at),
        attributes,
        0,
    )
}

fn parse_time(text: &str) -> Option<SystemTime> {
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// `00-<trace id>-<parent span id>-<flags>` → its parts; `None` for any other shape.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    if !capsule_protocol::trace::is_valid_traceparent(value) {
        return None;
    }
    let mut parts = value.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some((trace_id, span_id, TraceFlags::new(flags)))
}

fn random_trace_id() -> TraceId {
    TraceId::from_bytes(rand::random::<[u8; 16]>())
}

fn random_span_id() -> SpanId {
    SpanId::from_bytes(rand::random::<[u8; 8]>())
}

fn build_exporter(protocol: Protocol) -> Result<opentelemetry_otlp::SpanExporter> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let built = match protocol {
        Protocol::HttpProtobuf => builder.with_http().build(),
        Protocol::Grpc => builder.with_tonic().build(),
    };
    built.map_err(|e| Error::Export(e.to_string()))
}

async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(EXPORT_BATCH_SPANS);
    loop {
        if rx.recv_many(&mut batch, EXPORT_BATCH_SPANS).await == 0 {
            return;
        }
        let count = batch.len() as u64;
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => {
                metrics.spans_exported.inc_by(count);
            }
            Err(error) => {
                metrics.span_export_failures.inc_by(count);
                tracing::warn!(%error, spans = count, "OTLP export failed (counted)");
            }
        }
    }
}
