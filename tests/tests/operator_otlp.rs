//! The operator's reconcile spans leave by the transport `OTEL_EXPORTER_OTLP_PROTOCOL` names, to a
//! real gRPC collector (tonic, serving OpenTelemetry's `TraceService`) and to a real OTLP/HTTP
//! endpoint (protobuf bodies on `/v1/traces`), under the service name of `OTEL_SERVICE_NAME`; and
//! the operator's JSON log lines of a reconcile carry that reconcile's trace id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_e2e::{free_port, wait_for, DevCluster, OperatorRun};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::Value;

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: traced
  namespace: default
spec:
  replicas: 1
  template:
    image: capsule-worker:dev
"#;

/// One received span: its service name, name and trace id (hex).
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn record(spans: &Spans, request: ExportTraceServiceRequest) {
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.lock().unwrap().push(Received {
                service: service.clone(),
                name: span.name,
                trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
            });
        }
    }
}

struct GrpcCollector(Spans);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_grpc_collector(spans: Spans) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = TraceServiceServer::new(GrpcCollector(spans));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    port
}

async fn start_http_collector(spans: Spans) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let spans = spans.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                record(&spans, request);
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Runs an operator exporting with `env` until a reconcile span arrives; returns that span and
/// the operator's log.
fn first_reconcile_span(
    cluster: &DevCluster,
    dir: &std::path::Path,
    spans: &Spans,
    env: &[(&str, String)],
) -> (Received, String) {
    let log = dir.join(format!("operator-{}.log", free_port()));
    let mut run = OperatorRun::on_port(free_port());
    run.rust_log = "info,kube=warn".into();
    run.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    run.env.push(("CAPSULE_LOG_FORMAT".into(), "json".into()));
    run.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    let mut operator = run.start(cluster, &log);
    let span = wait_for("a reconcile span", Duration::from_secs(90), || {
        let received = spans.lock().unwrap().clone();
        received
            .iter()
            .find(|s| s.name == "reconcile")
            .cloned()
            .ok_or_else(|| {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!("received {received:?}; operator log (last lines first): {tail:#?}")
            })
    });
    operator.stop(Duration::from_secs(5));
    (span, std::fs::read_to_string(&log).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_spans_leave_over_grpc_and_http_with_the_configured_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    cluster.apply(POOL);

    let grpc_spans = Spans::default();
    let grpc_port = start_grpc_collector(grpc_spans.clone()).await;
    let (span, log) = first_reconcile_span(
        &cluster,
        dir.path(),
        &grpc_spans,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc_port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_SERVICE_NAME", "platform-capsule".into()),
        ],
    );
    assert_eq!(span.service, "platform-capsule", "{span:?}");

    // JSON log lines are flat (message at the top level) and a reconcile's carry its trace id.
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(lines.iter().all(|l| l.get("fields").is_none()), "{log}");
    let traced: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["span"]["trace_id"].as_str())
        .collect();
    let received: Vec<String> = grpc_spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    assert!(
        traced.iter().any(|id| received.iter().any(|r| r == id)),
        "no log line names an exported trace: logged {traced:?}, exported {received:?}\n{log}"
    );

    let http_spans = Spans::default();
    let http_port = start_http_collector(http_spans.clone()).await;
    let (span, _) = first_reconcile_span(
        &cluster,
        dir.path(),
        &http_spans,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{http_port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ],
    );
    assert_eq!(
        span.service, "capsule-operator",
        "the default name: {span:?}"
    );
}

#[test]
fn a_protocol_or_sampler_the_operator_cannot_use_stops_it_naming_the_variable() {
    for (variable, value, message) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "accepted: http/protobuf, grpc",
        ),
        ("OTEL_TRACES_SAMPLER", "sometimes", "accepted: always_on"),
    ] {
        let out = std::process::Command::new(capsule_e2e::bin("capsule-operator"))
            .arg("run")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
            .env(variable, value)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{variable}={value} accepted");
        assert!(
            stderr.contains(variable) && stderr.contains(message),
            "{variable}={value}: {stderr}"
        );
    }
}
