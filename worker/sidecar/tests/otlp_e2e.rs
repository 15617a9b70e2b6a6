//! End to end: the real `capsule-worker` sends trace events to the real `capsule-sidecar`, which
//! exports a span over OTLP HTTP/protobuf to a real receiver (PyPI `oteltap`). The span has the
//! request's trace id and parent, the execution's events, and no code or output anywhere.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use capsule_sidecar::redaction::keyed_hash;
use common::*;
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const CODE_MARKER: &str = "TOPSECRET_CODE_MARKER";
const OUTPUT_MARKER: &str = "OUTPUT_TEXT_MARKER";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first JSON document in `text` (oteltap may print more lines after the match).
fn first_json(text: &str) -> Option<Value> {
    serde_json::Deserializer::from_str(text.trim_start())
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// An OTLP id as hex: oteltap prints ids either as hex (OTLP/JSON) or as base64 (protobuf's JSON
/// mapping), depending on how the span reached it.
fn b64_to_hex(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    if matches!(text.len(), 16 | 32) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return text.to_ascii_lowercase();
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap_or_default())
        .expect("base64 id");
    hex::encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_with_traceparent_reaches_a_real_otlp_receiver() {
    let oteltap = tool("venv/bin/oteltap", "oteltap");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut receiver = Command::new(oteltap)
        .args([
            "--port",
            &port.to_string(),
            "--await-span",
            r"^capsule\.execute$",
        ])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("oteltap");
    let output = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = receiver.stdout.take().unwrap();
    let lines = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    while !output
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("Awaiting"))
    {
        assert!(Instant::now() < deadline, "oteltap never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    let socket = dir.path().join("trace.sock");
    let mut command = sidecar_command(&socket);
    command
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("CAPSULE_TRACE_REDACTION", "Hash");
    let mut sidecar = start_sidecar(command, dir.path());
    let mut worker = start_worker(worker_command(Some(&socket)), dir.path());
    bind_session(&worker, "session-1", "session-token").await;

    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    let code = format!(
        "{CODE_MARKER} = 'RESULT_' + 'VALUE_MARKER'\nprint('{OUTPUT_MARKER}')\n{CODE_MARKER}"
    );
    let events = execute(&worker, "session-token", &code, Some(&traceparent)).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "result", "{events:?}");
    let execution_id = last["executionId"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = receiver.try_wait() {
            assert!(status.success(), "oteltap failed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span arrived; sidecar log:\n{}",
            sidecar.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The reader thread may still be taking the last lines: wait for the match and its JSON.
    let deadline = Instant::now() + WAIT;
    let received = loop {
        let received = output.lock().unwrap().join("\n");
        let complete = received
            .split_once("Received a match:")
            .is_some_and(|(_, rest)| first_json(rest).is_some());
        if complete || Instant::now() > deadline {
            break received;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let matched = received
        .split_once("Received a match:")
        .unwrap_or_else(|| panic!("no match in oteltap's output:\n{received}"))
        .1;
    let span: Value = first_json(matched)
        .unwrap_or_else(|| panic!("no span JSON in oteltap's output:\n{received}"));

    assert_eq!(span["name"], "capsule.execute");
    assert_eq!(
        b64_to_hex(&span["traceId"]),
        TRACE_ID,
        "same trace as the client"
    );
    assert_eq!(
        b64_to_hex(&span["parentSpanId"]),
        PARENT_SPAN,
        "parented to the request"
    );
    let attributes: Vec<(String, String)> = span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_owned(),
                a["value"]["stringValue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let attribute = |key: &str| {
        attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        attribute("capsule.execution_id"),
        Some(keyed_hash(b"pool-secret-token", &execution_id)),
        "execution id under Hash redaction"
    );
    // The pod's identity rides on the resource (otlp_grpc.rs checks it there), not on each span.
    assert_eq!(attribute("capsule.pool"), None);
    assert_eq!(attribute("capsule.outcome").as_deref(), Some("Ok"));
    let event_names: Vec<&str> = span["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(event_names.first(), Some(&"submit"), "{event_names:?}");
    assert!(event_names.contains(&"outputFlush"), "{event_names:?}");
    assert_eq!(event_names.last(), Some(&"result"), "{event_names:?}");

    // Nothing of the code, its output or its value anywhere in what the receiver got.
    for secret in [
        CODE_MARKER,
        OUTPUT_MARKER,
        "RESULT_VALUE_MARKER",
        "session-1",
        &execution_id,
    ] {
        assert!(
            !received.contains(secret),
            "{secret:?} leaked into the exported telemetry"
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
async fn an_exporter_that_is_down_is_counted_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trace.sock");
    let mut command = sidecar_command(&socket);
    // Nothing listens on this port.
    command
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000");
    let mut sidecar = start_sidecar(command, dir.path());
    let mut worker = start_worker(worker_command(Some(&socket)), dir.path());
    bind_session(&worker, "session-1", "session-token").await;
    for _ in 0..3 {
        let events = execute(&worker, "session-token", "1 + 1", None).await;
        assert_eq!(events.last().unwrap()["type"], "result");
    }
    let text = wait_for_metric(&sidecar, "capsule_sidecar_span_export_failures_total", 1.0).await;
    assert_eq!(
        metric(&text, "capsule_sidecar_spans_exported_total"),
        Some(0.0)
    );
    worker.stop();
    sidecar.stop();
}
