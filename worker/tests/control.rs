//! Auth, bodies, sessions, checkpoint, warm-up, trace events and configuration errors.

mod common;

use std::time::Duration;

use capsule_protocol::execute::{Checkpoint, EventBody, ExecuteRequest, Transaction};
use capsule_protocol::frame;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};
use common::{final_event, result_repr, Worker, SESSION_TOKEN, WAIT, WORKER_TOKEN};
use serde_json::json;

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let worker = Worker::start_unbound(&[]).await;
    worker.wait_ready().await;
    let execute = |token: Option<&str>| {
        let mut request = worker
            .client
            .post(worker.url("/v1/executions"))
            .json(&json!({"code": "1"}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = execute(None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = execute(Some(SESSION_TOKEN)).await.unwrap();
    assert_eq!(response.status(), 409, "no session holds the worker");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "noSession");

    let unauthorized_bind = worker
        .client
        .put(worker.url("/v1/session"))
        .bearer_auth(SESSION_TOKEN)
        .json(&json!({"session": "s", "namespace": "n", "tokenSha256": common::sha256_hex(SESSION_TOKEN)}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized_bind.status(), 401);
    worker.bind().await;

    assert_eq!(execute(None).await.unwrap().status(), 401);
    assert_eq!(execute(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(execute(Some(WORKER_TOKEN)).await.unwrap().status(), 401);
    let ok = execute(Some(SESSION_TOKEN)).await.unwrap();
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await.unwrap();
    for path in [
        "/v1/reset",
        "/v1/executions/x/cancel",
        "/v1/promises/x/resolve",
    ] {
        let response = worker.client.post(worker.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let stats = worker
        .client
        .get(worker.url("/v1/stats"))
        .bearer_auth(WORKER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stats.status(),
        200,
        "the operator reads stats with the worker credential"
    );

    worker.release_with_reset().await;
    assert_eq!(execute(Some(SESSION_TOKEN)).await.unwrap().status(), 409);
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_clear_errors() {
    let worker = Worker::start(&[("CAPSULE_MAX_REQUEST_BYTES", "1024")]).await;
    let big = worker
        .post("/v1/executions")
        .json(&json!({"code": "x".repeat(4096)}))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let body: serde_json::Value = big.json().await.unwrap();
    assert_eq!(body["code"], "bodyTooLarge");
    assert!(
        body["message"].as_str().unwrap().contains("1024 bytes"),
        "{body}"
    );

    for bad in [
        &b"{not json"[..],
        br#"{"code": 5}"#,
        br#"{"code": "1", "extra": true}"#,
        b"",
    ] {
        let response = worker
            .post("/v1/executions")
            .header("content-type", "application/json")
            .body(bad.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "malformedBody", "{body}");
    }
    let bad_input = worker
        .post("/v1/executions/abc/input")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_input.status(), 400);
    // The worker is unharmed.
    let events = worker.run("6 * 7").await;
    assert_eq!(result_repr(&events).as_deref(), Some("42"));
}

#[tokio::test]
async fn checkpoint_reports_metadata_never_values() {
    let worker = Worker::start(&[]).await;
    worker
        .run("import json\nsecret = 'SUPERSECRETVALUE' * 10\ncount = 3\ndef helper():\n    pass\nclass Thing:\n    pass")
        .await;
    let response = worker
        .client
        .get(worker.url("/v1/checkpoint?label=nightly&owner=team-a"))
        .bearer_auth(SESSION_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("SUPERSECRETVALUE"), "{text}");
    let checkpoint: Checkpoint = serde_json::from_str(&text).unwrap();
    assert_eq!(checkpoint.counts.names, 5);
    assert_eq!(checkpoint.counts.functions, 1);
    assert_eq!(checkpoint.counts.classes, 1);
    assert_eq!(checkpoint.counts.modules, 1);
    assert!(checkpoint.counts.estimated_bytes >= 160, "{checkpoint:?}");
    assert_eq!(checkpoint.metadata["label"], "nightly");
    assert_eq!(checkpoint.metadata["owner"], "team-a");
}

#[tokio::test]
async fn warm_up_runs_before_ready() {
    let worker = Worker::start_unbound(&[(
        "CAPSULE_WARMUP_CODE",
        "import time\ntime.sleep(3)\nwarmed = 'yes'",
    )])
    .await;
    let early = worker
        .client
        .get(worker.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 503, "not ready while warm-up runs");
    let health = worker
        .client
        .get(worker.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    worker.wait_ready().await;
    worker.bind().await;
    let events = worker.run("warmed").await;
    assert_eq!(result_repr(&events).as_deref(), Some("'yes'"));
    let stats = worker.stats().await;
    assert_eq!(
        stats.executions.ok, 1,
        "warm-up is not counted as an execution"
    );
}

#[tokio::test]
async fn trace_events_reach_the_socket_with_the_traceparent_and_no_code() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trace.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let worker = Worker::start(&[("CAPSULE_TRACE_SOCKET", socket.to_str().unwrap())]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = worker
        .post("/v1/executions")
        .header("traceparent", traceparent)
        .json(&ExecuteRequest {
            code: "marker = 'CODE_MARKER_TEXT'\nprint('OUTPUT_MARKER_TEXT')\n1/0".into(),
            transaction: Some(Transaction::RollbackOnError),
            ..Default::default()
        })
        .send()
        .await
        .unwrap();
    let execution_id = response.headers()["x-capsule-execution-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.bytes().await.unwrap();
    let (mut stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut events: Vec<TraceEvent> = Vec::new();
    while !events.iter().any(|e| e.kind == TraceEventKind::Error) {
        let event: TraceEvent = tokio::time::timeout(WAIT, frame::read_frame_async(&mut stream))
            .await
            .unwrap()
            .unwrap();
        events.push(event);
    }
    // The session's binding comes first, under its own id; then the execution's steps.
    let bound = events.remove(0);
    assert_eq!(bound.kind, TraceEventKind::SessionBound, "{bound:?}");
    assert_eq!(bound.execution_id, "session:session-a");
    assert_eq!(bound.session.as_deref(), Some("session-a"));
    let kinds: Vec<TraceEventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&TraceEventKind::Submit), "{kinds:?}");
    assert_eq!(events[0].attributes["transaction"], "true");
    assert!(kinds.contains(&TraceEventKind::OutputFlush), "{kinds:?}");
    for event in &events {
        assert_eq!(event.execution_id, execution_id);
        assert_eq!(event.traceparent.as_deref(), Some(traceparent));
        assert_eq!(event.session.as_deref(), Some("session-a"));
        let json = serde_json::to_string(event).unwrap();
        assert!(
            !json.contains("MARKER_TEXT"),
            "no code or output in traces: {json}"
        );
    }
    let error = events.last().unwrap();
    assert_eq!(error.attributes["ename"], "ZeroDivisionError");
    assert_eq!(
        error.attributes["rolledBack"], "true",
        "the transaction's rollback, as metadata"
    );
    assert!(error.duration_ms.is_some());
    let deadline = tokio::time::Instant::now() + WAIT;
    while worker.stats().await.trace.sent < events.len() as u64 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn invalid_configuration_names_the_variable() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-worker"))
        .env("CAPSULE_BACKPRESSURE", "Sometimes")
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CAPSULE_BACKPRESSURE"), "{stderr}");
    assert!(stderr.contains("DropOldest"), "{stderr}");
}

#[tokio::test]
async fn queued_execution_can_be_cancelled_before_it_runs() {
    let worker = Worker::start(&[]).await;
    let mut first = worker
        .stream(&ExecuteRequest {
            code: "import time\nprint('go', flush=True)\ntime.sleep(1)".into(),
            ..Default::default()
        })
        .await;
    loop {
        if let EventBody::Output { .. } = first.expect_next().await.body {
            break;
        }
    }
    let mut second = worker
        .stream(&ExecuteRequest {
            code: "never_defined = 1".into(),
            ..Default::default()
        })
        .await;
    let accepted = second.expect_next().await;
    worker.cancel(&accepted.execution_id).await;
    let events = tokio::time::timeout(WAIT, second.collect()).await.unwrap();
    assert_eq!(
        final_event(&events),
        &EventBody::Cancelled {
            namespace_lost: false
        }
    );
    let _ = first.collect().await;
    let events = worker.run("'never_defined' in dir()").await;
    assert_eq!(result_repr(&events).as_deref(), Some("False"));
}

#[tokio::test]
async fn malformed_and_oversized_interpreter_frames_are_skipped_and_reported_not_fatal() {
    let worker = Worker::start(&[]).await;
    // Code that reaches the driver's private frame fd and writes garbage into the stream.
    let code = "import capsule, os, struct\n\
                fd = capsule.promise.__globals__['_frames_out_fd']\n\
                lock = capsule.promise.__globals__['_write_lock']\n\
                with lock:\n\
                \x20   os.write(fd, struct.pack('>I', 5) + b'{nope')\n\
                \x20   big = 17 * 1024 * 1024\n\
                \x20   os.write(fd, struct.pack('>I', big))\n\
                \x20   view = memoryview(b' ' * big)\n\
                \x20   while view:\n\
                \x20       view = view[os.write(fd, view):]\n\
                'alive'";
    let events = worker.run(code).await;
    // The code itself ran to its end, but the client is told its output may be incomplete.
    match final_event(&events) {
        EventBody::Error { ename, evalue, .. } => {
            assert_eq!(ename, "OutputLost");
            assert!(evalue.contains("2 frame(s)"), "{evalue}");
            assert!(evalue.contains("malformed frame"), "{evalue}");
            assert!(evalue.contains("ended with a result"), "{evalue}");
        }
        other => panic!("expected OutputLost, got {other:?}"),
    }
    assert_eq!(worker.stats().await.executor.outputs_dropped, 2);
    let events = worker.run("1 + 2").await;
    assert_eq!(result_repr(&events).as_deref(), Some("3"));
    assert_eq!(worker.stats().await.interpreter_restarts, 0);
}
