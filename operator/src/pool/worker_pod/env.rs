//! The environment contract of capsule-worker and capsule-sidecar: what each container of a worker
//! pod learns from the pool's spec, the operator's config and the downward API.

use capsule_crds::{
    CapsulePool, ExecutorSpec, IntrospectionSpec, OtlpProtocol, Redaction, TracingSpec,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, SecretKeySelector};
use kube::ResourceExt;

use super::TRACE_SOCKET;
use crate::config::OperatorConfig;
use crate::labels;
use crate::pool::pod_security;

/// The worker container's environment: identity and credential, heartbeat and executor settings,
/// the checkpoint store's variables, then the template's own.
pub(super) fn worker_env(
    pool: &CapsulePool,
    config: &OperatorConfig,
    pod_name: &str,
    checkpoint_env: Vec<EnvVar>,
) -> Vec<EnvVar> {
    let spec = &pool.spec;
    let mut out = downward_env();
    out.extend([
        env("CAPSULE_POOL", pool.name_any()),
        env("CAPSULE_HEARTBEAT_URL", config.heartbeat_url.clone()),
        worker_token_env(pod_name),
        env(
            "CAPSULE_HEARTBEAT_INTERVAL_SECONDS",
            spec.heartbeat.interval_seconds.to_string(),
        ),
    ]);
    out.extend(executor_env(&spec.executor));
    if let Some(warmup) = &spec.warmup {
        out.push(env("CAPSULE_WARMUP_CODE", warmup.code.clone()));
    }
    if spec.tracing.enabled {
        out.push(env("CAPSULE_TRACE_SOCKET", TRACE_SOCKET));
    }
    out.push(env("CAPSULE_SCRATCH_DIR", pod_security::SCRATCH_DIR));
    out.extend(checkpoint_env);
    out.extend(spec.template.env.iter().cloned());
    out
}

/// The sidecar container's environment.
pub(super) fn sidecar_env(pool: &CapsulePool, pod_name: &str) -> Vec<EnvVar> {
    let spec = &pool.spec;
    let mut out = downward_env();
    out.extend([
        env("CAPSULE_POOL", pool.name_any()),
        worker_token_env(pod_name),
        env("CAPSULE_TRACE_SOCKET", TRACE_SOCKET),
    ]);
    out.extend(trace_buffer_env(&spec.tracing));
    out.extend(introspection_env(&spec.introspection));
    out.extend(otlp_env(&spec.tracing));
    out
}

fn downward_env() -> Vec<EnvVar> {
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
    ]
}

fn executor_env(executor: &ExecutorSpec) -> [EnvVar; 7] {
    [
        env(
            "CAPSULE_OUTPUT_QUEUE_CAPACITY",
            executor.output_queue_capacity.to_string(),
        ),
        env("CAPSULE_BACKPRESSURE", executor.backpressure.as_str()),
        env(
            "CAPSULE_DRAIN_TIMEOUT_MS",
            executor.drain_timeout_ms.to_string(),
        ),
        env(
            "CAPSULE_INPUT_TIMEOUT_MS",
            (executor.input_timeout_seconds * 1000).to_string(),
        ),
        env(
            "CAPSULE_PROMISE_TIMEOUT_MS",
            (executor.promise_timeout_seconds * 1000).to_string(),
        ),
        env(
            "CAPSULE_CANCEL_GRACE_MS",
            executor.cancel_grace_ms.to_string(),
        ),
        env(
            "CAPSULE_EXECUTION_QUEUE_LIMIT",
            executor.execution_queue_limit.to_string(),
        ),
    ]
}

fn trace_buffer_env(tracing: &TracingSpec) -> [EnvVar; 4] {
    [
        env("CAPSULE_TRACE_MAX_EVENTS", tracing.max_events.to_string()),
        env(
            "CAPSULE_TRACE_MAX_AGE_SECONDS",
            tracing.max_age_seconds.to_string(),
        ),
        env("CAPSULE_TRACE_MAX_BYTES", tracing.max_bytes.to_string()),
        env("CAPSULE_TRACE_REDACTION", redaction_str(tracing.redaction)),
    ]
}

/// An empty view list when introspection is off: the sidecar serves nothing.
fn introspection_env(introspection: &IntrospectionSpec) -> [EnvVar; 3] {
    let views = if introspection.enabled {
        introspection
            .views
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        String::new()
    };
    [
        env("CAPSULE_INTROSPECTION_VIEWS", views),
        env(
            "CAPSULE_INTROSPECTION_REDACTION",
            redaction_str(introspection.redaction),
        ),
        env("CAPSULE_AUDIT", introspection.audit.to_string()),
    ]
}

fn otlp_env(tracing: &TracingSpec) -> Vec<EnvVar> {
    let Some(endpoint) = &tracing.otlp_endpoint else {
        return Vec::new();
    };
    let protocol = match tracing.otlp_protocol {
        OtlpProtocol::HttpProtobuf => "http/protobuf",
        OtlpProtocol::Grpc => "grpc",
    };
    vec![
        env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
    ]
}

/// A variable with a literal value.
pub(in crate::pool) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// The pod's own credential, from the Secret created for it (see `token::worker_credential_secret`).
fn worker_token_env(pod: &str) -> EnvVar {
    EnvVar {
        name: "CAPSULE_WORKER_TOKEN".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: labels::worker_credential_secret(pod),
                key: labels::TOKEN_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

fn redaction_str(r: Redaction) -> &'static str {
    match r {
        Redaction::None => "None",
        Redaction::Hash => "Hash",
        Redaction::Drop => "Drop",
    }
}
