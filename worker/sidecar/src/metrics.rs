//! The sidecar's own Prometheus metrics (text format on `/metrics`).

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a frame from the worker was rejected.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FrameRejection {
    Malformed,
    Oversized,
}

impl FrameRejection {
    /// The label value (lower_snake, like every label value of the project).
    pub fn as_str(self) -> &'static str {
        match self {
            FrameRejection::Malformed => "malformed",
            FrameRejection::Oversized => "oversized",
        }
    }
}

impl EncodeLabelValue for FrameRejection {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub reason: FrameRejection,
}

/// The gate's answer to one introspection request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Unauthenticated,
    Forbidden,
    Disabled,
    Unavailable,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Unauthenticated => "unauthenticated",
            Decision::Forbidden => "forbidden",
            Decision::Disabled => "disabled",
            Decision::Unavailable => "unavailable",
        }
    }
}

impl EncodeLabelValue for Decision {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub scope: RateLimitScope,
}

/// The `scope` label of refused introspection requests: `client` or `global`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct RateLimitScope(pub crate::rate_limit::Scope);

impl EncodeLabelValue for RateLimitScope {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: Decision,
}

/// Every metric the sidecar exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub events_received: Counter,
    /// Events that left the buffer before their age (count or memory bound).
    pub events_dropped: Counter,
    pub frames_rejected: Family<RejectionLabels, Counter>,
    pub spans_exported: Counter,
    pub span_export_failures: Counter,
    /// Spans not handed to the exporter (queue full or execution never finished in time).
    pub spans_dropped: Counter,
    /// Execution spans left out by the `OTEL_TRACES_SAMPLER` decision (not an error).
    pub spans_not_sampled: Counter,
    pub buffer_events: Gauge,
    pub buffer_bytes: Gauge,
    pub introspection_requests: Family<DecisionLabels, Counter>,
    /// Introspection requests answered 429 before the gate, by the bound that refused them.
    pub introspection_rate_limited: Family<RateLimitLabels, Counter>,
}

impl Metrics {
    pub fn registry(self: &std::sync::Arc<Self>) -> Registry {
        let mut root = Registry::default();
        capsule_telemetry::register(&mut root);
        let registry = root.sub_registry_with_prefix("capsule_sidecar");
        registry.register(
            "trace_events_received",
            "Trace events read from the worker",
            self.events_received.clone(),
        );
        registry.register(
            "trace_events_dropped",
            "Trace events evicted from the buffer by its count or memory bound",
            self.events_dropped.clone(),
        );
        registry.register(
            "trace_frames_rejected",
            "Frames from the worker skipped as malformed or oversized",
            self.frames_rejected.clone(),
        );
        registry.register(
            "spans_exported",
            "Execution spans accepted by the OTLP receiver",
            self.spans_exported.clone(),
        );
        registry.register(
            "span_export_failures",
            "Execution spans the OTLP exporter failed to deliver",
            self.span_export_failures.clone(),
        );
        registry.register(
            "spans_not_sampled",
            "Execution spans left out by the OTEL_TRACES_SAMPLER decision",
            self.spans_not_sampled.clone(),
        );
        registry.register(
            "spans_dropped",
            "Execution spans dropped before export (export queue full or unfinished execution)",
            self.spans_dropped.clone(),
        );
        registry.register(
            "trace_buffer_events",
            "Trace events held in the buffer",
            self.buffer_events.clone(),
        );
        registry.register_with_unit(
            "trace_buffer",
            "Memory accounted to the trace buffer",
            prometheus_client::registry::Unit::Bytes,
            self.buffer_bytes.clone(),
        );
        registry.register(
            "introspection_requests",
            "Introspection requests by the gate's decision",
            self.introspection_requests.clone(),
        );
        registry.register(
            "introspection_rate_limited",
            "Introspection requests refused with 429 by the per-client or overall rate limit",
            self.introspection_rate_limited.clone(),
        );
        root
    }

    pub fn record_rate_limited(&self, scope: crate::rate_limit::Scope) {
        self.introspection_rate_limited
            .get_or_create(&RateLimitLabels {
                scope: RateLimitScope(scope),
            })
            .inc();
    }

    pub fn record_decision(&self, decision: Decision) {
        self.introspection_requests
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }
}
