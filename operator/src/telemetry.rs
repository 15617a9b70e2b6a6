//! Logs through `tracing` (text or JSON, filtered by RUST_LOG) and, when the standard
//! OTEL_EXPORTER_OTLP_ENDPOINT is set, reconcile spans exported over OTLP (HTTP/protobuf or gRPC
//! per OTEL_EXPORTER_OTLP_PROTOCOL; service name, resource and sampler from the standard
//! variables, read by [`capsule_telemetry::otlp`]).

use capsule_telemetry::otlp::{self, Protocol};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the OTLP pipeline alive; dropping it flushes what is buffered.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The flush waits on the exporting task, which runs on the runtime's other threads.
            match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(|| provider.shutdown()),
                Err(_) => provider.shutdown(),
            }
            .ok();
        }
    }
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) -> Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            // Colour codes only for a terminal: container logs and files stay plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        // Flat like the worker's and the sidecar's: `message` and fields at the top level.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let settings = otlp::settings_from_env().map_err(|e| Error::Telemetry(e.to_string()))?;
    let provider = settings.map(|s| provider(s.protocol)).transpose()?;
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("capsule-operator"))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| Error::Telemetry(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// The exporter and resource the variables ask for. Spans are exported by a task on the tokio
/// runtime, not by the SDK's own thread: the async HTTP client (the one a workspace build, with
/// the sidecar's features, selects) and tonic both need the runtime. The SDK reads
/// OTEL_TRACES_SAMPLER itself; `settings_from_env` has refused bad values.
fn provider(protocol: Protocol) -> Result<SdkTracerProvider> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol {
        Protocol::HttpProtobuf => builder.with_http().build(),
        Protocol::Grpc => builder.with_tonic().build(),
    }
    .map_err(|e| Error::Telemetry(e.to_string()))?;
    let identity = [
        ("k8s.namespace.name", "POD_NAMESPACE"),
        ("k8s.pod.name", "POD_NAME"),
    ]
    .into_iter()
    .filter_map(|(key, var)| Some(KeyValue::new(key, std::env::var(var).ok()?)))
    .collect();
    let batch = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(otlp::resource("capsule-operator", identity))
        .build())
}

/// The current span's trace id, when spans are exported; used as a histogram exemplar.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
