//! A scripted API server behind kube's `tower-test` mock: every request the operator makes is
//! recorded and answered by the test's responder, so tests can assert the exact API calls.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One API call as the operator made it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Call {
    /// `"POST /api/v1/namespaces/default/pods"`
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub type Responder = Arc<dyn Fn(&Call) -> (StatusCode, Value) + Send + Sync>;

/// Starts the fake; returns a client talking to it and the shared call log.
pub fn start(responder: Responder) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.expect("request body").to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
            };
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body,
            };
            let (status, reply) = responder(&call);
            log.lock().unwrap().push(call);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), calls)
}

/// The operator's context over the fake: what a reconcile gets in the real process.
#[allow(dead_code)]
pub fn context(
    responder: Responder,
) -> (
    Arc<capsule_operator::context::Context>,
    Arc<Mutex<Vec<Call>>>,
) {
    let (ctx, calls, _registry) = context_and_registry(responder);
    (ctx, calls)
}

/// [`context`] and the registry its metrics are in, for tests that read `/metrics`.
#[allow(dead_code)]
pub fn context_and_registry(
    responder: Responder,
) -> (
    Arc<capsule_operator::context::Context>,
    Arc<Mutex<Vec<Call>>>,
    prometheus_client::registry::Registry,
) {
    let (client, calls) = start(responder);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(capsule_operator::metrics::Metrics::register(&mut registry));
    let ctx = Arc::new(capsule_operator::context::Context::new(
        client,
        metrics,
        capsule_operator::config::OperatorConfig::default(),
        Arc::new(capsule_operator::health::Health::default()),
    ));
    capsule_operator::relay::metrics::RelayMetrics::register(&mut registry, ctx.index.clone());
    (ctx, calls, registry)
}

/// The answer to a call a test did not expect: a 500 naming it, so the reconcile fails loudly.
pub fn unexpected(call: &Call) -> (StatusCode, Value) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"message": format!("unexpected call {} {}", call.method, call.path)}),
    )
}

pub fn not_found(what: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
               "message": format!("{what} not found"), "code": 404}),
    )
}

pub fn list(kind: &str, items: Vec<Value>) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "100"}, "items": items}),
    )
}

/// A heartbeat of `pod` of pool `p` in `default`: idle, unbound, every counter zero, with the
/// top-level `fields` given replacing the defaults.
#[allow(dead_code)]
pub fn heartbeat(pod: &str, fields: Value) -> capsule_protocol::heartbeat::Heartbeat {
    let mut body = json!({"pod": pod, "namespace": "default", "pool": "p", "seq": 1,
        "sentAt": "2026-11-30T00:00:00Z", "startedAt": "2026-11-30T00:00:00Z", "state": "idle",
        "session": null, "rssBytes": 1, "cpuPercent": 0.0, "namespaceSize": 0, "interpreterRestarts": 0,
        "executions": {"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0},
        "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0, "maxQueueDepth": 0, "drainTimeouts": 0},
        "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0, "timedOut": 0, "cancelled": 0},
        "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}});
    for (key, value) in fields.as_object().expect("fields are an object") {
        body[key] = value.clone();
    }
    serde_json::from_value(body).expect("a valid heartbeat")
}
