//! What a pool lets people see of its workers: the sidecar's trace buffer and export, its
//! policy-gated introspection views, and the Prometheus series the operator exports.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::default_true;

/// How identifiers in traces and introspection answers are protected.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Redaction {
    /// Kept as they are.
    None,
    /// Replaced by a keyed hash, stable within the pool so the same id still correlates.
    #[default]
    Hash,
    /// Removed.
    Drop,
}

/// OTLP transport.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[default]
    HttpProtobuf,
    Grpc,
}

/// The sidecar's trace buffer and export.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// Whether workers send trace events to their sidecar.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Trace events the buffer keeps; the oldest go first (counted).
    #[serde(default = "default_trace_max_events")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_events: i64,

    /// Seconds an event stays in the buffer.
    #[serde(default = "default_trace_max_age")]
    #[schemars(range(min = 1, max = 604800))]
    pub max_age_seconds: i64,

    /// Hard cap on the buffer's memory, in bytes.
    #[serde(default = "default_trace_max_bytes")]
    #[schemars(range(min = 65536, max = 1073741824))]
    pub max_bytes: i64,

    /// How session and execution identifiers are protected in traces.
    #[serde(default)]
    pub redaction: Redaction,

    /// OTLP endpoint to export spans to (for example `http://otel-collector:4318`). Unset: the
    /// sidecar's own OTEL_EXPORTER_OTLP_ENDPOINT, or no export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport.
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
}

fn default_trace_max_events() -> i64 {
    10_000
}
fn default_trace_max_age() -> i64 {
    3600
}
fn default_trace_max_bytes() -> i64 {
    16 * 1024 * 1024
}

impl Default for TracingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_events: default_trace_max_events(),
            max_age_seconds: default_trace_max_age(),
            max_bytes: default_trace_max_bytes(),
            redaction: Redaction::default(),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
        }
    }
}

/// A diagnostic view of the sidecar.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum IntrospectionView {
    Traces,
    Promises,
    Namespace,
    Counters,
    Pool,
}

/// Policy-gated introspection: every view is off unless listed here and `enabled` is true.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntrospectionSpec {
    /// Master switch.
    #[serde(default)]
    pub enabled: bool,

    /// The views served to callers that RBAC allows `get` on `capsulepools/introspection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub views: Vec<IntrospectionView>,

    /// How identifiers are protected in answers.
    #[serde(default)]
    pub redaction: Redaction,

    /// Write one audit record per request (allowed or denied).
    #[serde(default = "default_true")]
    pub audit: bool,
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for IntrospectionSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            views: Vec::new(),
            redaction: Redaction::default(),
            audit: default_true(),
        }
    }
}

/// Prometheus series for this pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Export per-worker series (labelled by pod). Off by default: it multiplies series by the
    /// pool's size.
    #[serde(default)]
    pub per_worker: bool,
}
