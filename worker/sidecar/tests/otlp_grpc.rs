//! OTLP over gRPC: the real `capsule-worker` and `capsule-sidecar` (with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) export to a real gRPC collector served in this test (tonic
//! with opentelemetry-proto's `TraceService`). The span carries the request's trace id and parent,
//! its attributes and events, and nothing of the code or output.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capsule_sidecar::redaction::keyed_hash;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const CODE_MARKER: &str = "TOPSECRET_CODE_MARKER";
const OUTPUT_MARKER: &str = "OUTPUT_TEXT_MARKER";

/// A collector that hands every received span (with its resource attributes) to the test.
struct Collector {
    spans: mpsc::UnboundedSender<(Vec<KeyValue>, Span)>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let _ = self.spans.send((resource.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            other => Some(format!("{other:?}")),
        }
    })
}

type Received = mpsc::UnboundedReceiver<(Vec<KeyValue>, Span)>;

/// Serves a gRPC trace collector on a free port; returns the port and what it receives.
async fn start_collector() -> (u16, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, spans) = mpsc::unbounded_channel();
    let collector = Arc::new(Collector { spans: tx });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::from_arc(collector))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (port, spans)
}

/// A sidecar exporting over gRPC to the collector on `port` (with `env` besides), and a worker
/// bound to `session-1` (token `session-token`) sending it trace events.
async fn start_exporting(
    dir: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
) -> (Running, Running) {
    let socket = dir.join("trace.sock");
    let mut command = sidecar_command(&socket);
    command
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .envs(env.iter().copied());
    let sidecar = start_sidecar(command, dir);
    let worker = start_worker(worker_command(Some(&socket)), dir);
    bind_session(&worker, "session-1", "session-token").await;
    (sidecar, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_grpc_collector_with_parent_and_attributes() {
    let (port, mut spans) = start_collector().await;

    let dir = tempfile::tempdir().unwrap();
    let (mut sidecar, mut worker) =
        start_exporting(dir.path(), port, &[("CAPSULE_TRACE_REDACTION", "Hash")]).await;

    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    let code = format!("{CODE_MARKER} = 'VALUE'\nprint('{OUTPUT_MARKER}')\n{CODE_MARKER}");
    let events = execute(&worker, "session-token", &code, Some(&traceparent)).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "result", "{events:?}");
    let execution_id = last["executionId"].as_str().unwrap().to_owned();

    let (resource, span) = tokio::time::timeout(Duration::from_secs(30), spans.recv())
        .await
        .unwrap_or_else(|_| panic!("no span over gRPC; sidecar log:\n{}", sidecar.stderr()))
        .expect("collector running");

    assert_eq!(span.name, "capsule.execute");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(hex::encode(&span.trace_id), TRACE_ID, "the client's trace");
    assert_eq!(
        hex::encode(&span.parent_span_id),
        PARENT_SPAN,
        "parented to the request"
    );
    assert_eq!(span.span_id.len(), 8);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let key = b"pool-secret-token";
    assert_eq!(
        string_attribute(&span.attributes, "capsule.execution_id"),
        Some(keyed_hash(key, &execution_id)),
        "the execution id as redacted (Hash)"
    );
    assert_eq!(
        string_attribute(&span.attributes, "capsule.session"),
        Some(keyed_hash(key, "session-1"))
    );
    assert_eq!(
        string_attribute(&resource, "capsule.pool"),
        Some("pool-a".into()),
        "the pod's identity is on the resource: {resource:?}"
    );
    assert_eq!(
        string_attribute(&span.attributes, "capsule.outcome"),
        Some("Ok".into())
    );
    assert_eq!(
        string_attribute(&resource, "k8s.namespace.name"),
        Some("team-a".into())
    );
    assert!(string_attribute(&resource, "k8s.pod.name").is_some_and(|p| !p.is_empty()));
    assert_eq!(
        string_attribute(&span.attributes, "k8s.namespace.name"),
        None
    );
    let event_names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(event_names.first(), Some(&"submit"), "{event_names:?}");
    assert_eq!(event_names.last(), Some(&"result"), "{event_names:?}");
    assert_eq!(
        string_attribute(&resource, "service.name").as_deref(),
        Some("capsule-worker"),
        "{resource:?}"
    );

    let everything = format!("{resource:?}{span:?}");
    for secret in [
        CODE_MARKER,
        OUTPUT_MARKER,
        "VALUE",
        "session-1",
        &execution_id,
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked into the span"
        );
    }

    let metrics = wait_for_metric(&sidecar, "capsule_sidecar_spans_exported_total", 1.0).await;
    assert_eq!(
        metric(&metrics, "capsule_sidecar_span_export_failures_total"),
        Some(0.0)
    );
    worker.stop();
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_variables_decide_which_execution_spans_leave() {
    let (port, mut spans) = start_collector().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        ("OTEL_SERVICE_NAME", "team-a-sandboxes"),
    ];
    let (mut sidecar, mut worker) = start_exporting(dir.path(), port, &env).await;

    // A root (no parent) and a parent that was not sampled are left out; a sampled parent is kept.
    let unsampled = format!("00-{TRACE_ID}-{PARENT_SPAN}-00");
    let sampled = format!("00-{}-{PARENT_SPAN}-01", "1".repeat(32));
    execute(&worker, "session-token", "1", None).await;
    execute(&worker, "session-token", "2", Some(&unsampled)).await;
    execute(&worker, "session-token", "3", Some(&sampled)).await;

    let (resource, span) = tokio::time::timeout(Duration::from_secs(30), spans.recv())
        .await
        .unwrap_or_else(|_| panic!("no span over gRPC; sidecar log:\n{}", sidecar.stderr()))
        .expect("collector running");
    assert_eq!(hex::encode(&span.trace_id), "1".repeat(32));
    assert_eq!(
        string_attribute(&resource, "service.name").as_deref(),
        Some("team-a-sandboxes"),
        "OTEL_SERVICE_NAME names the service"
    );
    // The collector may hold the span before the exporter has its answer and counts it.
    wait_for_metric(&sidecar, "capsule_sidecar_spans_exported_total", 1.0).await;
    let metrics = wait_for_metric(&sidecar, "capsule_sidecar_spans_not_sampled_total", 2.0).await;
    assert_eq!(
        metric(&metrics, "capsule_sidecar_spans_exported_total"),
        Some(1.0)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(spans.try_recv().is_err(), "only the sampled span leaves");
    worker.stop();
    sidecar.stop();
}
