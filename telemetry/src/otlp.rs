//! The standard `OTEL_*` variables, read the same way by every Capsule process that exports
//! spans: which transport, which resource (service name and attributes) and which sampler.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use crate::sampler::Sampler;

/// Which OTLP transport the standard variables ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// What the environment asks of an exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub protocol: Protocol,
    pub sampler: Sampler,
}

/// A variable set to a value this process cannot use; the message names it and the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct EnvError {
    pub variable: &'static str,
    pub message: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Reads the variables: `None` when no endpoint is set (no export).
pub fn settings_from_env() -> Result<Option<OtlpSettings>, EnvError> {
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let (variable, value) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(v) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default(),
        ),
    };
    let protocol = match value.as_str() {
        "" | "http/protobuf" => Protocol::HttpProtobuf,
        "grpc" => Protocol::Grpc,
        other => {
            return Err(EnvError {
                variable,
                message: format!("unsupported protocol {other:?}; accepted: http/protobuf, grpc"),
            })
        }
    };
    let sampler = Sampler::parse(
        var("OTEL_TRACES_SAMPLER").as_deref(),
        var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )?;
    Ok(Some(OtlpSettings { protocol, sampler }))
}

/// The resource of this process: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK
/// reads them, `default_service_name` only where neither names a service, plus `attributes`
/// (such as `k8s.pod.name`) where the environment does not set them.
pub fn resource(default_service_name: &str, attributes: Vec<KeyValue>) -> Resource {
    let from_env = Resource::builder().build();
    let unnamed = from_env
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let missing: Vec<KeyValue> = attributes
        .into_iter()
        .filter(|kv| from_env.get(&kv.key).is_none() && !kv.value.as_str().is_empty())
        .collect();
    let mut builder = Resource::builder().with_attributes(missing);
    if unnamed {
        builder = builder.with_service_name(default_service_name.to_owned());
    }
    builder.build()
}
